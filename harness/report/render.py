"""Render the long table of benchmark results as ``report.md`` with PNG figures beside it.

The output is deterministic: groups, labels and failures are sorted, the Markdown has no
timestamps and the PNGs carry no version/date metadata, so the same table renders to the same bytes.
Every file is written atomically (temporary file in the same directory, then ``os.replace``).
"""
from __future__ import annotations

import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from ..results import CellTables, cell_tables
from ..stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED
from . import checks, figures
from .accuracy import accuracy_grid_section
from .fewshot import fewshot_section, is_episodic
from .ops import ops_section
from .tables import (
    FULL,
    Values,
    escape,
    group_table,
    label_order,
    latest_records,
    markdown_table,
    missing_reasons,
    values_by_label,
)

GROUP_KEYS = ["target", "model", "data", "resolution", "batch", "mode"]
FAILED_COLUMNS = ["target", "run_id", "cell_id", "model", "label"]

HOW_TO_READ = f"""\
## How to read this report

Timing is the median over the timed steps of a cell, on the device, per training step of one batch,
in ms; the bracket is the interquartile range [q1–q3], n is the number of timed steps and warm-up the
number of untimed steps run before them. Every column header and every figure carries its source
tag: measured (observed on the device), analytic (computed from the model), emulated or modelled
(estimated, not observed). A cell whose source is emulated or modelled, or differs from its column's
tag, names its own tag. Memory convention: "saved" is the bytes autograd keeps for the backward pass
(saved tensors; parameters, buffers and the input batch excluded), in KiB (1 KiB = 1024 B). "bwd FLOP"
is the FLOPs counted on the executed backward graph, in MFLOP (10^6 FLOP). Accuracy is after
training, in percent. "—" marks a missing value; where a reason was recorded it is listed below the
table.

The ratios (×) compare each row with the `{FULL}` row of the same group for the same quantity; the
`{FULL}` row's own ratio is 1 by definition. Time ratios are ratios of medians with a
{DEFAULT_CONFIDENCE:.0%} confidence interval [low–high] from a percentile bootstrap: the timed steps of
the two cells, which ran one after the other, are resampled independently, {DEFAULT_RESAMPLES:,}
times, with seed {DEFAULT_SEED} (the same journals give the same report). Ratios marked "exact" compare
single values from one untimed pass (saved bytes, counted FLOPs): nothing is sampled, so they carry
no interval."""


@dataclass(frozen=True)
class Group:
    """The ok records of one (target, model, data, resolution, batch, mode), one record per label."""

    target: str
    model: str
    data: str
    resolution: int
    batch: int
    mode: str
    labels: list[str]
    values: Values
    reasons: list[str]
    notes: list[str]
    run_ids: list[str]

    @property
    def title(self) -> str:
        """Human-readable group name."""
        return f"{self.target} · {self.model} · {_setting(self.data, self.resolution, self.batch, self.mode)}"


def _setting(data: str, resolution: int, batch: int, mode: str) -> str:
    """Data, resolution, batch and (other than performance) the mode, for titles."""
    return f"{data} · {resolution} px · batch {batch}" + ("" if mode == "performance" else f" · {mode} mode")


def _setting_parts(data: str, resolution: int, batch: int, mode: str) -> list[str]:
    """The same for figure file names."""
    return [data, f"r{resolution}", f"b{batch}"] + ([] if mode == "performance" else [mode])


def _groups(ok: pd.DataFrame) -> list[Group]:
    groups = []
    for (target, model, data, resolution, batch, mode), rows in ok.groupby(GROUP_KEYS, sort=True):
        records, notes = latest_records(rows)
        values = values_by_label(records)
        groups.append(Group(
            str(target), str(model), str(data), int(resolution), int(batch), str(mode), label_order(values), values,
            missing_reasons(records), notes, sorted(set(records["run_id"].astype(str))),
        ))
    return groups


def _safe(part: object) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "-", str(part)).strip("-.") or "x"


def _file_name(used: set[str], *parts: object) -> str:
    """A unique file name of safe characters built from ``parts``; records it in ``used``."""
    stem = "_".join(_safe(part) for part in parts)
    name, i = f"{stem}.png", 2
    while name in used:
        name, i = f"{stem}-{i}.png", i + 1
    used.add(name)
    return name


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _preamble(sources: list[str]) -> str:
    listed = ", ".join(f"`{source}`" for source in sources) or "none given"
    return f"# odt-bench report\n\nSources: {listed}.\n\n{HOW_TO_READ}"


def _group_section(group: Group, out_dir: Path, used: set[str]) -> str:
    parts = [f"## {group.title}", f"Runs: {', '.join(group.run_ids)}.",
             group_table(group.values, group.labels)]
    if group.reasons:
        parts.append("Missing values:\n\n" + "\n".join(f"- {escape(line)}" for line in group.reasons))
    if group.notes:
        parts.append("Repeated records:\n\n" + "\n".join(f"- {escape(line)}" for line in group.notes))
    name = _file_name(used, "latency", group.target, group.model,
                      *_setting_parts(group.data, group.resolution, group.batch, group.mode))
    fig = figures.latency_figure(f"Latency breakdown — {group.title}", group.labels, group.values)
    _write_atomic(out_dir / name, figures.png_bytes(fig))
    parts.append(f"![Latency breakdown, {escape(group.title)}]({name})")
    return "\n\n".join(parts)


def _accuracy_section(groups: list[Group], out_dir: Path, used: set[str]) -> str:
    by_setting: dict[tuple[str, str, int, int, str], dict[str, Values]] = {}
    for g in groups:
        by_setting.setdefault((g.target, g.data, g.resolution, g.batch, g.mode), {})[g.model] = g.values
    parts = ["## Accuracy vs backward memory"]
    for (target, *setting), by_model in sorted(by_setting.items()):
        points = figures.accuracy_points(by_model)
        if not points:
            continue
        title = f"{target} · {_setting(*setting)}"
        name = _file_name(used, "accuracy", target, *_setting_parts(*setting))
        fig = figures.accuracy_figure(f"Accuracy vs measured backward memory — {title}", points)
        _write_atomic(out_dir / name, figures.png_bytes(fig))
        parts.append(f"![Accuracy vs measured backward memory, {escape(title)}]({name})")
    if len(parts) == 1:
        parts.append("No cell recorded both accuracy after training and saved bytes.")
    return "\n\n".join(parts)


def _failed_section(failed: pd.DataFrame) -> str:
    if failed.empty:
        return ""
    rows = failed[FAILED_COLUMNS + ["reason"]].fillna("").astype(str).drop_duplicates()
    rows = rows.sort_values(FAILED_COLUMNS + ["reason"])
    columns = [(name, [escape(cell) for cell in rows[name]]) for name in FAILED_COLUMNS]
    columns.append(("error", [escape(cell) for cell in rows["reason"]]))
    return "## Failed cells\n\n" + markdown_table(columns, left_aligned=len(columns))


def render(table: pd.DataFrame, out_dir: Path, sources: list[str], cells: CellTables | None = None) -> Path:
    """Write ``out_dir/report.md`` and its PNG figures for the long ``table`` and the per-cell
    tables ``cells`` (none when not given); return the report path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cells = cell_tables([]) if cells is None else cells
    ok = table[table["status"] == "ok"]
    groups = _groups(ok)
    used: set[str] = set()
    sections = [_preamble(sources)]
    sections += [_group_section(group, out_dir, used) for group in groups] or ["No successful results."]
    sections.append(_accuracy_section(groups, out_dir, used))
    sections.append(accuracy_grid_section(ok[~is_episodic(ok)]))
    sections.append(fewshot_section(ok))
    sections.append(ops_section(groups))
    sections.append(checks.overhead_section(cells.overhead))
    sections.append(checks.paired_section(cells.paired))
    sections.append(checks.saved_bytes_section(ok))
    sections.append(checks.calibration_section(cells.calibration))
    sections.append(checks.system_checks_section(cells.system_checks))
    sections.append(_failed_section(table[table["status"] == "failed"]))
    report = out_dir / "report.md"
    _write_atomic(report, ("\n\n".join(s for s in sections if s) + "\n").encode("utf-8"))
    return report
