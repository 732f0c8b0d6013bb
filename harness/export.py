"""Journals as pytest-benchmark JSON files, so ``pytest-benchmark list`` and ``compare`` read them.

``benchmark_document(records)`` builds the document (pytest-benchmark 5.x format) from journal
records; ``export_journal(path)`` writes it as a new ``NNNN_<journal stem>.json`` next to the
journal, numbered as pytest-benchmark's own file storage numbers its runs.

What goes where:

- ``benchmarks``: one per ok cell (the latest record of a cell in the journal wins). Its ``stats``
  are pytest-benchmark's own ``Stats`` over the device-measured step times
  (``measurement.samples.step_ns`` / 1e9 s, one round per step, one iteration per round), so every
  field means what it means for a pytest benchmark. ``name`` is ``test_cell[<cell name>]`` (the
  names of ``harness.job.unique_names``), ``group`` is model, data, resolution and batch, so
  methods on the same workload are compared in one table. ``extra_info`` holds everything else of
  the cell, the raw integer-ns samples of every step part and of the warm-up included.
- ``machine_info``: the *device* (the record's ``device`` description, plus pytest-benchmark's own
  keys where that description fills them: ``node`` from ``hostname``, ``machine`` from ``board``,
  ``python_version`` from ``python``; the others are None, never the host's values) and ``target``.
- ``commit_info``: the host's git state from the records' provenance (``id`` = git SHA, ``dirty``);
  the commit and author times and the branch are not recorded, so they are None.
- ``failed_cells`` (extra top-level key, ignored by pytest-benchmark's loaders): cells whose
  latest record failed, with their error; they are not benchmarks.
- ``odt_bench`` (extra top-level key): the journal, its skipped lines, run ids, counts.

A journal with records but no ok cell still gives a file, with an empty ``benchmarks`` list (the
run is numbered and its failures are kept; ``pytest-benchmark list`` lists it and ``compare``
shows nothing for it, exit 0). A journal that is missing or has no valid record is an
``ExportError``.
"""
import datetime
import json
import os
import re
import uuid
from pathlib import Path

import pytest_benchmark
from pytest_benchmark.stats import Stats

from . import __version__
from .job import Job, JobError, unique_names
from .journal import JournalError, read_journal

TEST_FILE = "suites/test_benchmarks.py"
TEST_FUNCTION = "test_cell"
PARAM = "cell"
PROJECT = "odt-bench"
NUMBERED = re.compile(r"^(\d{4})_.*\.json$")
RECORD_KEYS = ("schema", "target", "cell_id", "run_id", "plan", "status", "job", "provenance",
               "measurement", "device", "update_plan", "error")
SMALL_UPDATE_LIST = 8


class ExportError(JournalError, ValueError):
    """A journal cannot be exported; the message names the file and why."""


def _latest_per_cell(records):
    """The latest record of each cell, in the order cells first appear."""
    latest = {}
    for record in records:
        latest[record["cell_id"]] = record  # a dict keeps a key where it was first inserted
    return list(latest.values())


def group(job):
    group = "%s, %s, r%d, b%d" % (job.model, job.data, job.resolution, job.batch)
    return group if job.mode == "performance" else "%s, %s" % (group, job.mode)


def _timer(measurement):
    """The device clock the step stamps were read from, as pytest-benchmark's ``timer`` option."""
    clock = measurement.get("clock") or {}
    name = clock.get("name")
    if name is None and str(measurement.get("agent") or "").startswith("odt-bench-agent/"):
        name = "time.perf_counter_ns"  # the odt-bench agent stamps steps with it, only it
    unit = clock.get("unit") or "unknown unit"
    if unit == "ticks" and clock.get("hz"):
        unit = "ticks at %s Hz" % clock["hz"]
    return "device %s (%s, replayed from the journal)" % (name or "clock", unit)


def _step_samples(record):
    """The integer-ns step samples of an ok record, or None when it has none usable."""
    samples = (record.get("measurement") or {}).get("samples") or {}
    steps = samples.get("step_ns")
    if (not isinstance(steps, list) or not steps
            or not all(isinstance(t, int) and not isinstance(t, bool) and t >= 0 for t in steps)):
        return None
    return steps


def _stats(step_ns):
    """pytest-benchmark's stats dict (``Metadata.as_dict``'s ``stats``) over steps in seconds."""
    stats = Stats()
    for ns in step_ns:
        stats.update(ns / 1e9)
    out = stats.as_dict()
    out["data"] = list(stats.data)
    out["iterations"] = 1
    return out


def _update_plan_summary(plan):
    """Counts of the update plan (the full plan stays in the journal)."""
    if not isinstance(plan, dict):
        return plan
    layers = [layer for layer in plan.get("layers") or [] if isinstance(layer, dict)]
    out = {k: v for k, v in plan.items() if k != "layers" and not isinstance(v, (list, dict))}
    counts = {}
    for layer in layers:
        counts[str(layer.get("update"))] = counts.get(str(layer.get("update")), 0) + 1
    out["layers"] = len(layers)
    out["updates"] = dict(sorted(counts.items()))
    updated = [layer.get("name") for layer in layers if layer.get("update") != "frozen"]
    if len(updated) <= SMALL_UPDATE_LIST:
        out["updated_layers"] = updated
    return out


def _trace_summary(trace):
    """What a power trace holds (the samples themselves stay in the journal)."""
    if not isinstance(trace, dict):
        return trace
    t_ns = trace.get("t_ns") or []
    return {"samples": len(t_ns), "span_ns": (t_ns[-1] - t_ns[0]) if t_ns else None,
            "series": [k for k in ("power_w", "current_a", "voltage_v") if trace.get(k) is not None],
            "rails": sorted(trace.get("rails") or {}), "total_rail": trace.get("total_rail"),
            "note": "the full trace is in the journal record"}


def extra_info(record, job, name, device, attempts):
    m = record["measurement"]
    extra = {"cell_id": record["cell_id"], "name": name, "label": job.label, "attempts": attempts,
             "target": record["target"], "run_id": record.get("run_id"), "plan": record.get("plan"),
             "job": record["job"],
             "stats_source": "measurement.samples.step_ns (device clock, integer ns) / 1e9 = s; "
                             "one round per timed step"}
    for key, value in m.items():  # samples, warmup_samples, figures, calibration, placement, ...
        extra[key] = _trace_summary(value) if key == "trace" else value
    extra["update_plan"] = _update_plan_summary(record.get("update_plan"))
    extra["provenance"] = record.get("provenance")
    if record.get("device") != device:
        extra["device"] = record.get("device")  # not the device machine_info describes
    for key, value in record.items():  # fields of other record versions (e.g. top-level seeds)
        if key not in RECORD_KEYS:
            extra.setdefault(key, value)
    return extra


def _benchmark(record, job, name, device, attempts):
    step_ns = _step_samples(record)
    m = record["measurement"]
    return {
        "group": group(job),
        "name": "%s[%s]" % (TEST_FUNCTION, name),
        "fullname": "%s::%s[%s]" % (TEST_FILE, TEST_FUNCTION, name),
        "params": {PARAM: name},
        "param": name,
        "extra_info": extra_info(record, job, name, device, attempts),
        "options": {
            "disable_gc": None,  # not recorded
            "timer": _timer(m),
            "min_rounds": job.steps,
            "max_time": None,
            "min_time": None,
            "precision": None,
            "confidence": None,
            "warmup": job.warmup,
            "warmup_rounds": len((m.get("warmup_samples") or {}).get("step_ns") or []),
            "threads": job.threads,
            "cpus": getattr(job, "cpus", None),
            "mode": job.mode,
        },
        "stats": _stats(step_ns),
    }


def _failed(record, job, name, attempts, error=None):
    return {"cell_id": record["cell_id"], "name": name, "group": group(job), "attempts": attempts,
            "target": record["target"], "run_id": record.get("run_id"), "plan": record.get("plan"),
            "status": record["status"], "job": record["job"],
            "error": error if error is not None else record.get("error"),
            "provenance": record.get("provenance")}


def machine_info(device, target):
    """pytest-benchmark's ``machine_info`` for the device ``device`` (a device description)."""
    d = device if isinstance(device, dict) else {}
    info = {
        "node": d.get("hostname"),
        "processor": None,
        "machine": d.get("board"),
        "python_compiler": None,
        "python_implementation": None,
        "python_implementation_version": None,
        "python_version": d.get("python"),
        "python_build": None,
        "release": None,
        "system": None,
        # py-cpuinfo's keys that the device's own readings are: platform.machine(), the
        # /proc/cpuinfo model name, os.cpu_count()
        "cpu": {"arch_string_raw": d.get("board"), "brand_raw": d.get("cpu_model"),
                "count": d.get("cpu_count")},
    }
    for key, value in d.items():
        info.setdefault(key, value)
    info["target"] = target
    return info


def commit_info(records):
    """pytest-benchmark's ``commit_info`` from the latest record's provenance."""
    provenances = [r.get("provenance") or {} for r in records]
    latest = provenances[-1] if provenances else {}
    info = {"id": latest.get("git_sha"), "time": None, "author_time": None,
            "dirty": latest.get("git_dirty"), "project": PROJECT, "branch": None,
            "odt_bench_version": (latest.get("packages") or {}).get(PROJECT)}
    ids = list(dict.fromkeys(p.get("git_sha") for p in provenances))
    if len(ids) > 1:
        info["ids"] = ids  # the journal's cells were run from several commits
    return info


def benchmark_document(records, target=None, generated_at=None):
    """The pytest-benchmark JSON document of journal ``records`` (of one target: ``target``, or
    the only target the records have). ``generated_at``: an aware datetime, default now."""
    targets = list(dict.fromkeys(r["target"] for r in records))
    if target is None:
        if len(targets) > 1:
            raise ExportError("records of several targets (%s); export one target at a time"
                              % ", ".join(targets))
        target = targets[0] if targets else None
    records = [r for r in records if r["target"] == target]
    if not records:
        raise ExportError("no records of target %r" % (target,))
    latest = _latest_per_cell(records)
    jobs = {}
    for record in latest:
        try:
            jobs[record["cell_id"]] = Job.from_json(record["job"])
        except (TypeError, JobError) as exc:
            raise ExportError("cell %s: its job cannot be read (%s)" % (record["cell_id"], exc))
    names = unique_names(list(jobs.values()))
    ok = [r for r in latest if r["status"] == "ok"]
    device = ok[-1].get("device") if ok else None
    attempts = {}  # records per cell: a retried or resumed cell has several, the latest wins
    for record in records:
        attempts[record["cell_id"]] = attempts.get(record["cell_id"], 0) + 1
    benchmarks, failed = [], []
    for record in latest:
        cell = record["cell_id"]
        job, name, n = jobs[cell], names[jobs[cell].cell_id], attempts[cell]
        if record["status"] != "ok":
            failed.append(_failed(record, job, name, n))
        elif _step_samples(record) is None:
            failed.append(_failed(record, job, name, n, {
                "failure": "no-step-samples", "detail": "",
                "message": "the ok record has no integer-ns measurement.samples.step_ns"}))
        else:
            benchmarks.append(_benchmark(record, job, name, device, n))
    when = generated_at or datetime.datetime.now(datetime.timezone.utc)
    return {
        "machine_info": machine_info(device, target),
        "commit_info": commit_info(records),
        "benchmarks": benchmarks,
        "datetime": when.isoformat(),
        "version": pytest_benchmark.__version__,
        "failed_cells": failed,
        "odt_bench": {"exported_by": "odt-bench %s" % __version__, "target": target,
                      "run_ids": list(dict.fromkeys(r.get("run_id") for r in records)),
                      "plans": list(dict.fromkeys(r.get("plan") for r in records)),
                      "records": len(records), "cells": len(latest), "benchmarks": len(benchmarks),
                      "failed": len(failed),
                      "stats_unit": "s (from integer ns of the device clock)"},
    }


def next_number(storage_dir):
    """One more than the highest ``NNNN_*.json`` in ``storage_dir`` and its sub-directories (where
    pytest-benchmark's file storage looks), as 4 digits; ``0001`` for none."""
    storage = Path(storage_dir)
    found = [int(NUMBERED.match(p.name).group(1))
             for p in list(storage.glob("*.json")) + list(storage.glob("*/*.json"))
             if NUMBERED.match(p.name) and p.is_file()]
    return "%04d" % (max(found, default=0) + 1)


def _fsync_dir(path):
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _publish(tmp, final):
    """Give the complete file ``tmp`` the name ``final`` atomically, never replacing a file:
    FileExistsError if ``final`` exists. A hard link refuses an existing name (``os.replace``
    would overwrite one made since it was numbered); where links are not supported, the name is
    reserved with O_EXCL first and then replaced."""
    try:
        os.link(tmp, final)
    except FileExistsError:
        raise
    except OSError:
        os.close(os.open(final, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666))
        try:
            os.replace(tmp, final)
        except OSError:
            os.unlink(final)
            raise


def export_journal(journal_path, storage_dir=None, target=None):
    """Write the journal at ``journal_path`` as a new pytest-benchmark file
    ``<storage_dir>/NNNN_<journal stem>.json`` (default storage: the journal's directory) and
    return its path. Never overwrites; written to a temporary file, fsync'd, then named."""
    journal_path = Path(journal_path)
    if not journal_path.is_file():
        raise ExportError("no journal file at %s" % journal_path)
    records, problems = read_journal(journal_path)
    if not records:
        raise ExportError("%s holds no valid journal record%s" % (
            journal_path, "".join("\n  " + p for p in problems)))
    try:
        doc = benchmark_document(records, target=target)
    except ExportError as exc:
        raise ExportError("%s: %s" % (journal_path, exc)) from None
    doc["odt_bench"]["journal"] = str(journal_path)
    doc["odt_bench"]["journal_problems"] = problems
    data = json.dumps(doc, ensure_ascii=True, indent=4).encode()

    storage = Path(storage_dir) if storage_dir is not None else journal_path.parent
    storage.mkdir(parents=True, exist_ok=True)
    tmp = storage / (".%s.%s.tmp" % (journal_path.stem, uuid.uuid4().hex))
    fd = os.open(tmp, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        for _ in range(100):
            number = next_number(storage)
            if len(number) > 4:
                raise ExportError("%s: numbers up to 9999 are taken" % storage)
            final = storage / ("%s_%s.json" % (number, journal_path.stem))
            try:
                _publish(tmp, final)
            except FileExistsError:
                continue  # another export took the number; count again
            break
        else:
            raise ExportError("%s: could not find a free file number" % storage)
    finally:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
    _fsync_dir(storage)
    return final
