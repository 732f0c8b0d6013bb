"""Measurement: a cell's device-raw data and host-derived figures, as stored in the journal.

Raw step samples are stored as integer ns and summarised only when read (``timing``); every
other number is a ``Figure`` with unit, source and, when missing, a reason.
"""
from .target import DeviceRun
from .units import Figure, Source, missing

STEP_PARTS = ("forward_ns", "backward_ns", "update_ns", "step_ns")


def step_samples(run: DeviceRun, phase="timed"):
    """Integer-ns samples per step part from the device's four stamps per step."""
    steps = [s["t"] for s in run.steps if s["phase"] == phase]
    return {
        "forward_ns": [t[1] - t[0] for t in steps],
        "backward_ns": [t[2] - t[1] for t in steps],
        "update_ns": [t[3] - t[2] for t in steps],
        "step_ns": [t[3] - t[0] for t in steps],
    }


def device_figures(run: DeviceRun, target_name, has_meter=False):
    """Figures from the device's result: memory, accuracy, energy (null until meters exist)."""
    memory = run.result.get("memory", {})
    acc = run.result.get("accuracy", {})
    figs = {}
    peak = memory.get("peak_rss_bytes")
    figs["peak_rss_bytes"] = (Figure(peak, "bytes", Source.MEASURED, per="run", how="VmHWM")
                              if peak else missing("bytes", Source.MEASURED, "the device reported no RSS",
                                                   per="run"))
    if memory.get("hwm_reset") and memory.get("train_hwm_bytes") is not None:
        figs["train_peak_bytes"] = Figure(memory["train_hwm_bytes"] - memory["train_start_rss_bytes"],
                                          "bytes", Source.MEASURED, per="run",
                                          how="VmHWM during timed steps minus VmRSS at their start")
    else:
        figs["train_peak_bytes"] = missing("bytes", Source.MEASURED, per="run", reason=(
            "the device could not reset its RSS high-water mark (/proc/self/clear_refs)"))
    for key in ("before", "after"):
        value = acc.get(key)
        figs["accuracy_" + key] = (
            Figure(value, "fraction", Source.MEASURED, per="run", how="top-1 on the held-out split")
            if value is not None else
            missing("fraction", Source.MEASURED, "synthetic data: a cost-only cell has no accuracy",
                    per="run"))
    if not has_meter:
        figs["energy_j"] = missing("J", Source.MEASURED, per="run", reason=(
            "target %r has no power meter attached" % target_name))
    return figs


def flatten(figures, prefix=""):
    """Nested ``{group: {convention: Figure}}`` to ``{"group.convention": figure json}``."""
    out = {}
    for name, value in figures.items():
        if isinstance(value, dict):
            out.update(flatten(value, prefix + name + "."))
        else:
            out[prefix + name] = value.to_json()
    return out


def measurement(run: DeviceRun, analysis, target_name):
    """The journal's ``measurement`` object for a successful cell."""
    return {
        "samples": step_samples(run),
        "warmup_samples": step_samples(run, "warmup"),
        "regions": run.regions,
        "clock": run.hello.get("clock"),
        "agent": run.hello.get("agent"),
        "figures": flatten(dict(device_figures(run, target_name), **analysis)),
    }
