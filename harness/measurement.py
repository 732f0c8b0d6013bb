"""Measurement: a cell's device-raw data and host-derived figures, as stored in the journal.

Raw step samples are stored as integer ns and summarised only when read (``timing``); every
other number is a ``Figure`` with unit, source and, when missing, a reason.
"""
from dataclasses import asdict
from statistics import median

from .energy import TOTAL, EnergyError, energy_per_window
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


def energy_figures(run: DeviceRun, target_name, observed=Source.MEASURED):
    """Energy of the timed window, total and per rail, from the run's trace; else null + reason."""
    if run.trace is None:
        reason = run.health.get("meter_error") or "target %r has no power meter attached" % target_name
        return {"energy_j": missing("J", observed, reason, per="run")}
    try:
        per_window = energy_per_window(run.trace, run.regions, run.clock_offset,
                                       meter_on_device_clock=False)
    except EnergyError as exc:
        return {"energy_j": missing("J", observed, "energy not computable: %s" % exc, per="run")}
    timed = per_window.get("timed", {})
    how = "power trace integrated over the timed region (trapezoid), clock offset %d ns" % (
        run.clock_offset.offset_ns)
    figs = {"energy_j": Figure(timed.get(TOTAL), "J", observed, per="run", how=how)
            if timed.get(TOTAL) is not None else
            missing("J", observed, "the trace names no total rail", per="run")}
    for rail, joules in sorted(timed.items()):
        if rail != TOTAL:
            figs["energy_rail_j." + rail] = Figure(joules, "J", observed, per="run", how=how)
    return figs


def device_figures(run: DeviceRun, target_name, observed=Source.MEASURED):
    """Figures from the device's result: memory, accuracy, energy. ``observed``: the source of
    memory and energy (``EMULATED`` when the device ran an emulation, e.g. of an int8 graph)."""
    memory = run.result.get("memory", {})
    acc = run.result.get("accuracy", {})
    scope = "; paired mode: both arms' steps" if run.result.get("paired") else ""
    figs = {}
    peak = memory.get("peak_rss_bytes")
    figs["peak_rss_bytes"] = (Figure(peak, "bytes", observed, per="run", how="VmHWM")
                              if peak else missing("bytes", observed, "the device reported no RSS",
                                                   per="run"))
    if memory.get("hwm_reset") and memory.get("train_hwm_bytes") is not None:
        figs["train_peak_bytes"] = Figure(memory["train_hwm_bytes"] - memory["train_start_rss_bytes"],
                                          "bytes", observed, per="run",
                                          how="VmHWM during timed steps minus VmRSS at their start" + scope)
    else:
        figs["train_peak_bytes"] = missing("bytes", observed, per="run", reason=(
            "the device could not reset its RSS high-water mark (/proc/self/clear_refs)"))
    if "cuda_train_max_allocated_bytes" in memory:  # a cell run with device = "cuda"
        figs["cuda_train_peak_bytes"] = Figure(
            memory["cuda_train_max_allocated_bytes"] - memory["cuda_train_start_allocated_bytes"], "bytes",
            observed, per="run", how="torch.cuda.max_memory_allocated() over the timed steps (peak statistics "
                                      "reset before them) minus memory_allocated() at their start" + scope)
    held_out = "top-1 on the %s" % acc.get("split", "held-out split")
    for key in ("before", "after"):
        value = acc.get(key)
        figs["accuracy_" + key] = (
            Figure(value, "fraction", Source.MEASURED, per="run", how=held_out)
            if value is not None else
            missing("fraction", Source.MEASURED, "synthetic data: a cost-only cell has no accuracy",
                    per="run"))
    figs.update(selection_figures(run.result.get("selection")))
    figs.update(energy_figures(run, target_name, observed))
    return figs


def selection_figures(selection):
    """An on-device selection's cost (TinyTrain): median time of its timed runs and of the
    reference pass beside them; {} where the plan was chosen on the host."""
    if not selection:
        return {}
    n, support = len(selection["selection_ns"]), selection["support"]
    return {
        "selection_ns": Figure(median(selection["selection_ns"]), "ns", Source.MEASURED, per="run",
                               how="median of %d timed selections on the support set (%d images)" % (n, support)),
        "selection_reference_ns": Figure(
            median(selection["reference_ns"]), "ns", Source.MEASURED, per="run",
            how="median of %d forward+backward passes of every parameter on the same support set (BN in eval "
                "mode), each run right after a timed selection" % n)}


def flatten(figures, prefix=""):
    """Nested ``{group: {convention: Figure}}`` to ``{"group.convention": figure json}``."""
    out = {}
    for name, value in figures.items():
        if isinstance(value, dict):
            out.update(flatten(value, prefix + name + "."))
        else:
            out[prefix + name] = value.to_json()
    return out


def measurement(run: DeviceRun, analysis, target_name, numeric="fp32"):
    """The journal's ``measurement`` object for a successful cell."""
    observed = Source.MEASURED if numeric == "fp32" else Source.EMULATED
    return {
        "samples": step_samples(run),
        "warmup_samples": step_samples(run, "warmup"),
        "regions": run.regions,
        "clock": run.hello.get("clock"),
        "agent": run.hello.get("agent"),
        "figures": flatten(dict(device_figures(run, target_name, observed), **analysis)),
        "calibration": run.result.get("calibration"),
        "placement": run.result.get("placement"),
        "ops_backend": run.result.get("ops_backend"),
        "system_checks": run.result.get("system_checks", []),
        "overhead": run.result.get("overhead"),
        "paired": run.result.get("paired"),
        "selection": run.result.get("selection"),
        "health": run.health,
        "trace": None if run.trace is None else asdict(run.trace),
        "clock_offset": None if run.clock_offset is None else asdict(run.clock_offset),
    }
