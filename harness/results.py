"""From journals to the pandas tables that reports read (no torch, no targets).

Records are keyed by (target, cell id); the last record for a key wins, across the journals
given, in file order. Timing figures are summarised here from the raw samples, which stay in the
long table (``samples``) for the statistics a report draws from them. What a cell recorded beside
its samples and figures (timer overhead, calibration, placement, system checks) goes into small
per-cell tables (``cell_tables``); journals older than those keys simply give empty tables.
"""
from dataclasses import dataclass

import pandas as pd

from .job import Job, unique_names
from .journal import journal_paths, read_journal
from .measurement import STEP_PARTS
from .stats import summary

CELL_COLUMNS = ["target", "run_id", "cell_id", "name", "series", "warmup"]
"""Every row of a record: which cell, its readable name, its series (the name without the fields
that only tell repeated cells apart: lr, seed, steps, schedule, backbone; ``Job.name``) and the
warm-up steps it ran."""
COLUMNS = CELL_COLUMNS + ["model", "method", "label", "data", "resolution", "batch", "mode", "lr", "seed",
                          "episode", "checkpoint", "status",
                          "quantity", "value", "unit", "source", "per", "reason", "n", "q1", "q3",
                          "samples"]
CALIBRATION_KEYS = ["warmup_min", "warmup_max", "warmup_steps", "warmup_stop", "window", "tolerance",
                    "estimate_step_ns", "timer_resolution_ns", "timed_steps", "timed_reason",
                    "min_timed_ns"]
OVERHEAD_ARMS = ["reported_ns", "instrumented_ns", "bare_ns"]
OVERHEAD_COLUMNS = CELL_COLUMNS + OVERHEAD_ARMS + ["order"]
PAIRED_ARMS = ["filtered_backward_ns", "exact_backward_ns", "filtered_step_ns", "exact_step_ns",
               "filtered_faults", "exact_faults"]
PAIRED_COLUMNS = CELL_COLUMNS + PAIRED_ARMS + ["order"]
CALIBRATION_COLUMNS = CELL_COLUMNS + CALIBRATION_KEYS + ["threads", "cpus"]
CHECK_COLUMNS = CELL_COLUMNS + ["check", "status", "value", "advice"]
DEVICE_KEYS = ["board", "cpu_model", "cpu_count", "memory_capacity_bytes", "os", "python", "torch",
               "torch_threads", "governor", "gpu", "malloc_env"]
PROBE_KEYS = ["copy_bytes_per_s", "gemm_flop_per_s", "op_dispatch_ns", "threads", "how"]
DEVICE_COLUMNS = ["target", "run_id"] + DEVICE_KEYS + ["probe_" + key for key in PROBE_KEYS]


def load(paths):
    """``(latest records, problems)`` from journal files or directories."""
    latest, problems = {}, []
    for path in journal_paths(paths):
        records, bad = read_journal(path)
        problems.extend(bad)
        for record in records:
            latest[(record["target"], record["cell_id"])] = record
    return list(latest.values()), problems


def _warmup(record):
    """Warm-up steps an ok record ran: the calibration's count where recorded, else the job's."""
    calibration = record["measurement"].get("calibration") or {}
    return calibration.get("warmup_steps", record["job"]["warmup"])


def _cells(records):
    """``{cell_id: (Job, name)}``, each job parsed once, its name unique across the records' cells
    (a cell on two targets is one cell)."""
    jobs = {record["cell_id"]: Job.from_json(record["job"]) for record in records}
    names = unique_names(list(jobs.values()))
    return {cell_id: (job, names[cell_id]) for cell_id, job in jobs.items()}


def _cell(record, cells):
    warmup = _warmup(record) if record["status"] == "ok" else None
    job, name = cells[record["cell_id"]]
    return {"target": record["target"], "run_id": record.get("run_id"), "cell_id": record["cell_id"],
            "name": name, "series": job.name, "warmup": warmup}


def _rows(record, cells):
    job = record["job"]
    base = dict(_cell(record, cells), model=job["model"], method=job["method"],
                label=cells[record["cell_id"]][0].label, data=job["data"], resolution=job["resolution"],
                batch=job["batch"], mode=job["mode"], lr=job["lr"], seed=job["seed"],
                episode=job.get("episode", ""), checkpoint=job.get("checkpoint"), status=record["status"])
    nan = float("nan")
    if record["status"] != "ok":
        error = record.get("error") or {}
        yield dict(base, quantity="error", value=nan, unit="count", source="measured", per="run",
                   reason="%s: %s" % (error.get("failure"), error.get("message")), n=nan, q1=nan, q3=nan,
                   samples=None)
        return
    m = record["measurement"]
    # an int8 cell times the fp32 emulation of its int8 graph
    timing = "measured" if job.get("numeric", "fp32") == "fp32" else "emulated"
    for part in STEP_PARTS:
        samples = m["samples"][part]
        if samples:
            s = summary(samples)
            yield dict(base, quantity=part, value=s["median"], unit="ns", source=timing, per="batch",
                       reason=None, n=s["n"], q1=s["q1"], q3=s["q3"], samples=tuple(samples))
    for name, fig in sorted(m["figures"].items()):
        value = nan if fig["value"] is None else float(fig["value"])
        yield dict(base, quantity=name, value=value, unit=fig["unit"], source=fig["source"],
                   per=fig["per"], reason=fig.get("reason"), n=nan, q1=nan, q3=nan, samples=None)


def long_table(records):
    cells = _cells(records)
    rows = [row for record in records for row in _rows(record, cells)]
    return pd.DataFrame(rows, columns=COLUMNS)


@dataclass(frozen=True)
class CellTables:
    """One row per ok cell that recorded timer-overhead pairs (``overhead``), pairs of a filtered
    plan and its exact twin (``paired``), calibration or placement (``calibration``), one row
    per system check of each cell (``system_checks``), and one row per run of a target, ok or not,
    with the device its run described (``devices``)."""

    overhead: pd.DataFrame
    paired: pd.DataFrame
    calibration: pd.DataFrame
    system_checks: pd.DataFrame
    devices: pd.DataFrame


def _overhead_rows(cell, m):
    pairs = m.get("overhead")
    if pairs:
        yield dict(cell, **{arm: tuple(pairs[arm]) for arm in OVERHEAD_ARMS}, order=pairs["order"])


def _paired_rows(cell, m):
    """The i-th timed step of the cell's plan and the i-th step of its exact twin form pair i;
    each arm's minor page faults per step where they were counted (else None)."""
    pairs = m.get("paired")
    if pairs:
        faults = pairs.get("minor_faults") or {}
        yield dict(cell, filtered_backward_ns=tuple(m["samples"]["backward_ns"]),
                   exact_backward_ns=tuple(pairs["exact"]["backward_ns"]),
                   filtered_step_ns=tuple(m["samples"]["step_ns"]), exact_step_ns=tuple(pairs["exact"]["step_ns"]),
                   filtered_faults=tuple(faults["plan"]) if faults else None,
                   exact_faults=tuple(faults["exact"]) if faults else None, order=pairs["order"])


def _calibration_rows(cell, m):
    calibration, placement = m.get("calibration") or {}, m.get("placement") or {}
    if calibration or placement:
        cpus = placement.get("cpus")
        yield dict(cell, **{key: calibration.get(key) for key in CALIBRATION_KEYS},
                   threads=placement.get("threads"), cpus=None if cpus is None else tuple(cpus))


def _check_rows(cell, m):
    for check in m.get("system_checks") or ():
        yield dict(cell, check=check["name"], status=check["status"], value=check.get("value"),
                   advice=check.get("advice"))


def _device_rows(records):
    """The first record of each (target, run) that holds a device description, in record order."""
    seen = set()
    for record in records:
        key, device = (record["target"], record.get("run_id")), record.get("device")
        if device and key not in seen:
            seen.add(key)
            probe = device.get("probe") or {}
            yield dict({"target": key[0], "run_id": key[1]}, **{k: device.get(k) for k in DEVICE_KEYS},
                       **{"probe_" + k: probe.get(k) for k in PROBE_KEYS})


def cell_tables(records):
    """The per-cell tables of the ok ``records`` and the devices of all of them; values keep their
    JSON types (object columns)."""
    cells = _cells(records)
    ok = [(_cell(record, cells), record["measurement"]) for record in records if record["status"] == "ok"]

    def frame(rows, columns):
        return pd.DataFrame([row for cell, m in ok for row in rows(cell, m)], columns=columns, dtype=object)

    return CellTables(frame(_overhead_rows, OVERHEAD_COLUMNS), frame(_paired_rows, PAIRED_COLUMNS),
                      frame(_calibration_rows, CALIBRATION_COLUMNS), frame(_check_rows, CHECK_COLUMNS),
                      pd.DataFrame(list(_device_rows(records)), columns=DEVICE_COLUMNS, dtype=object))
