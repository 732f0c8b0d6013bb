"""From journals to the pandas long table that reports read (no torch, no targets).

Records are keyed by (target, cell id); the last record for a key wins, across the journals
given, in file order. Timing figures are summarised here from the raw samples.
"""
import pandas as pd

from .journal import journal_paths, read_journal
from .job import Job
from .measurement import STEP_PARTS
from .stats import summary

COLUMNS = ["target", "run_id", "cell_id", "model", "method", "label", "data", "resolution", "batch",
           "status", "quantity", "value", "unit", "source", "per", "reason", "n", "q1", "q3"]


def load(paths):
    """``(latest records, problems)`` from journal files or directories."""
    latest, problems = {}, []
    for path in journal_paths(paths):
        records, bad = read_journal(path)
        problems.extend(bad)
        for record in records:
            latest[(record["target"], record["cell_id"])] = record
    return list(latest.values()), problems


def _rows(record):
    job = record["job"]
    base = {"target": record["target"], "run_id": record.get("run_id"), "cell_id": record["cell_id"],
            "model": job["model"], "method": job["method"], "label": Job.from_json(job).label,
            "data": job["data"], "resolution": job["resolution"], "batch": job["batch"],
            "status": record["status"]}
    nan = float("nan")
    if record["status"] != "ok":
        error = record.get("error") or {}
        yield dict(base, quantity="error", value=nan, unit="count", source="measured", per="run",
                   reason="%s: %s" % (error.get("failure"), error.get("message")), n=nan, q1=nan, q3=nan)
        return
    m = record["measurement"]
    for part in STEP_PARTS:
        samples = m["samples"][part]
        if samples:
            s = summary(samples)
            yield dict(base, quantity=part, value=s["median"], unit="ns", source="measured", per="batch",
                       reason=None, n=s["n"], q1=s["q1"], q3=s["q3"])
    for name, fig in sorted(m["figures"].items()):
        value = nan if fig["value"] is None else float(fig["value"])
        yield dict(base, quantity=name, value=value, unit=fig["unit"], source=fig["source"],
                   per=fig["per"], reason=fig.get("reason"), n=nan, q1=nan, q3=nan)


def long_table(records):
    rows = [row for record in records for row in _rows(record)]
    return pd.DataFrame(rows, columns=COLUMNS)
