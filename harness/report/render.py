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
from ..stats import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, DEFAULT_SEED, Interval
from . import checks, figures
from .accuracy import accuracy_grid_section, accuracy_rows, best_rate_means, has_grid
from .devices import devices_section
from .fewshot import Save, fewshot_section, is_episodic
from .ops import ops_section
from .tables import (
    FULL,
    MISSING,
    Value,
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

EPISODES, GRID = "episodes", "grid"
ACCURACY_ELSEWHERE = {
    EPISODES: """\
Few-shot cells: each label ran one cell per episode (seed). A row shows the costs of one of them, the
latest record (listed under the table), and no accuracy: one episode's is mostly noise. The accuracy
over the episodes, with its confidence interval, is in the few-shot section.""",
    GRID: """\
Some labels ran at several learning rates or seeds. A row shows the costs of one of their records,
the latest (listed under the table), and no accuracy: the accuracy over the rates and seeds is in the
learning-rate grid section, and the accuracy figure plots each label's mean at its best rate.""",
}
REPEATED_FIGURE_NOTE = "\none record per label, the latest (the report lists them under \"Repeated records\")"
"""The latency figure of a group where some label ran several cells shows the same records as its table."""
GRID_ACCURACY_AXIS = (f"accuracy after training (%; with a bar: the mean over seeds\n"
                      f"at the label's best lr, {DEFAULT_CONFIDENCE:.0%} CI")


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
    accuracy_elsewhere: str
    """``EPISODES`` or ``GRID`` where a label's accuracy is over several records, else ``""``."""
    best: dict[str, tuple[float, Interval]]
    """``GRID`` groups: per label its best rate and mean accuracy there (``best_rate_means``)."""

    @property
    def episodic(self) -> bool:
        return self.accuracy_elsewhere == EPISODES

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
        accuracies = accuracy_rows(rows)
        elsewhere = EPISODES if is_episodic(rows).any() else GRID if has_grid(accuracies) else ""
        groups.append(Group(
            str(target), str(model), str(data), int(resolution), int(batch), str(mode), label_order(values), values,
            missing_reasons(records), notes, sorted(set(records["run_id"].astype(str))), elsewhere,
            best_rate_means(accuracies) if elsewhere == GRID else {},
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


def _group_section(group: Group, save: Save) -> str:
    parts = [f"## {group.title}", f"Runs: {', '.join(group.run_ids)}."]
    if group.accuracy_elsewhere:
        parts.append(ACCURACY_ELSEWHERE[group.accuracy_elsewhere])
    parts.append(group_table(group.values, group.labels, accuracy=not group.accuracy_elsewhere))
    if group.reasons:
        parts.append("Missing values:\n\n" + "\n".join(f"- {escape(line)}" for line in group.reasons))
    if group.notes:
        parts.append("Repeated records:\n\n" + "\n".join(f"- {escape(line)}" for line in group.notes))
    title = f"Latency breakdown — {group.title}" + (REPEATED_FIGURE_NOTE if group.notes else "")
    fig = figures.latency_figure(title, group.labels, group.values)
    parts.append(save(fig, f"Latency breakdown, {group.title}", "latency", group.target, group.model,
                      *_setting_parts(group.data, group.resolution, group.batch, group.mode)))
    return "\n\n".join(parts)


def _accuracy_points(group: Group) -> list[figures.AccuracyPoint]:
    """A group's points: each label's accuracy, or in a ``GRID`` group its mean at its best rate."""
    if not group.best:
        return figures.accuracy_points({group.model: group.values})
    points = []
    for label in group.labels:
        if label not in group.best:
            continue
        lr, ci = group.best[label]
        source = group.values[label].get("accuracy_after", MISSING).source or "measured"
        point = figures.AccuracyPoint(group.model, f"{label} · lr {lr:g}",
                                      group.values[label].get("measured_saved_bytes", MISSING),
                                      Value(ci.estimate, source), ci.low, ci.high)
        if point.plottable:
            points.append(point)
    return points


def _accuracy_section(groups: list[Group], save: Save) -> str:
    plain = [g for g in groups if not g.episodic]
    if groups and not plain:
        return ""  # few-shot cells only: the few-shot section plots their episodes
    by_setting: dict[tuple[str, str, int, int, str], list[Group]] = {}
    for g in plain:
        by_setting.setdefault((g.target, g.data, g.resolution, g.batch, g.mode), []).append(g)
    parts = ["## Accuracy vs backward memory"]
    for (target, *setting), mine in sorted(by_setting.items()):
        points = [p for g in sorted(mine, key=lambda g: g.model) for p in _accuracy_points(g)]
        if not points:
            continue
        title = f"{target} · {_setting(*setting)}"
        y_axis = GRID_ACCURACY_AXIS if any(g.best for g in mine) else figures.ACCURACY_AXIS
        fig = figures.accuracy_figure(f"Accuracy vs measured backward memory — {title}", points, y_axis=y_axis)
        parts.append(save(fig, f"Accuracy vs measured backward memory, {title}", "accuracy", target,
                          *_setting_parts(*setting)))
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

    def save(fig: figures.Figure, alt: str, *parts: object) -> str:
        """Write ``fig`` under a unique name built from ``parts``; return its Markdown image line."""
        name = _file_name(used, *parts)
        _write_atomic(out_dir / name, figures.png_bytes(fig))
        return f"![{escape(alt)}]({name})"

    sections = [_preamble(sources), devices_section(cells.devices)]
    sections += [_group_section(group, save) for group in groups] or ["No successful results."]
    sections.append(_accuracy_section(groups, save))
    sections.append(accuracy_grid_section(ok[~is_episodic(ok)]))
    sections.append(fewshot_section(ok, save))
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
