"""Report sections that check the measurements themselves: the timer's overhead and the paired
filtered/exact timings (one row per cell, each with its own interval), saved bytes cross-checked at
the allocator and the calibration decisions (one row per series of cells that differ only in lr,
seed, steps, schedule or backbone), and the system checks (per target).

Each section is rendered only when some cell recorded its data (older journals lack it) and is
``""`` otherwise. Rows are sorted by target and cell or series name, so the same tables give the same
text.
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Callable

import pandas as pd

from ..agreement import AGREE_BYTES, AGREE_FRACTION, disagreement
from ..stats import DEFAULT_CONFIDENCE, median, paired_ratio_ci
from .tables import (
    DASH,
    count_cell,
    escape,
    format_ci,
    kib_text,
    markdown_table,
    marked,
    row_value,
    sig3,
)

SERIES_NOTE = ("A row covers a series of cells: cells whose names differ only in lr, seed (episode), steps, "
               "schedule or backbone, counted under \"n cells\"; a figure that differs between them is "
               "given as its lowest–highest.")
OVERHEAD_LIMIT = 1.03
"""Timing is accepted when the CI's upper bound of reported/bare is at most this."""
HOOKS, ALLOCATOR = "measured_saved_bytes", "allocator_saved_bytes"
CELL_ORDER = ["target", "name", "run_id", "cell_id"]


def _sorted(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.sort_values(CELL_ORDER, kind="stable")


def _table(headers: list[str], rows: list[list[object]]) -> str:
    """A Markdown table of ``rows`` (cells as text); target and cell left-aligned, the rest right."""
    columns = [(header, [escape(str(row[i])) for row in rows]) for i, header in enumerate(headers)]
    return markdown_table(columns, left_aligned=2)


def _three_decimals(ratio: float) -> str:
    return f"{ratio:.3f}"


def overhead_section(overhead: pd.DataFrame) -> str:
    """Per cell, the reported and the whole instrumented step against the bare step: medians of
    per-pair ratios with their paired CIs, and whether the reported one is accepted."""
    if overhead.empty:
        return ""
    rows = []
    for row in _sorted(overhead).itertuples(index=False):
        reported = paired_ratio_ci(row.reported_ns, row.bare_ns)
        whole = paired_ratio_ci(row.instrumented_ns, row.bare_ns)
        verdict = "yes" if reported.high <= OVERHEAD_LIMIT else "no"
        rows.append([row.target, row.name, format_ci(reported, _three_decimals),
                     format_ci(whole, _three_decimals), reported.sizes[0], count_cell(row.warmup), row.order,
                     verdict])
    ci = f"[{DEFAULT_CONFIDENCE:.0%} CI]"
    headers = ["target", "cell", f"reported/bare {ci}", f"with message/bare {ci}", "n pairs", "warm-up",
               "order", f"CI high ≤ {OVERHEAD_LIMIT}"]
    intro = ("Each pair is one instrumented training step, as timed steps run, and one bare step (the same "
             "work with no clock reads inside and no message), back to back in the order shown; the bare "
             "step is timed from outside. \"reported\" is the step time the harness records for the "
             "instrumented step (its last stamp minus its first); \"with message\" is that step timed from "
             "outside, sending its step message included (sent between timed steps, never inside one). "
             "Each ratio is the median of the per-pair ratios, so drift shared by the two steps of a pair "
             "cancels; its confidence interval resamples the pairs (paired bootstrap). The reported step "
             f"time is accepted when the upper bound of its interval is at most {OVERHEAD_LIMIT}.")
    return "\n\n".join(["## Timer overhead", intro, _table(headers, rows)])


def _ms(samples) -> str:
    return sig3(median(samples) / 1e6)


def _faults(samples) -> str:
    """Median minor page faults per step; ``—`` where they were not counted."""
    return f"{median(samples):,.0f}" if isinstance(samples, tuple) else DASH


def paired_section(paired: pd.DataFrame) -> str:
    """Per cell, a gradient-filtered plan against its exact twin, run as interleaved pairs: median
    backward times and the speedups (exact / filtered) of backward and of the whole step, with
    their paired CIs, and each arm's median minor page faults per step."""
    if paired.empty:
        return ""
    rows = []
    for row in _sorted(paired).itertuples(index=False):
        backward = paired_ratio_ci(row.exact_backward_ns, row.filtered_backward_ns)
        step = paired_ratio_ci(row.exact_step_ns, row.filtered_step_ns)
        rows.append([row.target, row.name, _ms(row.exact_backward_ns), _ms(row.filtered_backward_ns),
                     format_ci(backward), format_ci(step), _faults(row.exact_faults), _faults(row.filtered_faults),
                     backward.sizes[0], count_cell(row.warmup), row.order])
    ci = f"[{DEFAULT_CONFIDENCE:.0%} CI]"
    headers = ["target", "cell", "exact backward ms", "filtered backward ms", f"backward speedup {ci}",
               f"step speedup {ci}", "exact faults/step", "filtered faults/step", "n pairs", "warm-up", "order"]
    intro = ("Each pair is one training step of the cell's plan (gradient-filtered convs) and one of its exact "
             "twin (the same layers trained by exact backprop with stock PyTorch layers, same layout, same "
             "batch), back to back in the order shown, both timed by the same stamps. A speedup is the median "
             "of the per-pair ratios exact / filtered; its interval resamples the pairs (paired bootstrap). "
             "Faults/step: the median minor page faults of one step of each arm (getrusage, read just outside "
             "the step's stamps): memory the step touched for the first time, which the kernel then had to "
             "map. A step that faults pays for it, and how often an arm's step does depends on the "
             "process's allocator history, which the two arms share: compare speedups across cells only "
             "where the exact arms' faults and times agree.")
    return "\n\n".join(["## Gradient filtering against exact backprop (paired)", intro, _table(headers, rows)])


def _span(values: list, digits: Callable[[float], str]) -> str:
    """The one value, or ``lowest–highest`` of several, through ``digits``; ``—`` for none."""
    present = sorted({v for v in values if pd.notna(v)})
    if not present:
        return DASH
    return digits(present[0]) if len(present) == 1 else f"{digits(present[0])}–{digits(present[-1])}"


def _tally(values: list) -> str:
    """The one value, or each value with how many cells had it, most common first; ``—`` for none."""
    counts = Counter(str(v) for v in values if v is not None)
    if len(counts) < 2:
        return next(iter(counts), DASH)
    return ", ".join(f"{v} ×{n}" for v, n in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0])))


def _series_rows(frame: pd.DataFrame, cells: Callable[[pd.DataFrame], list[object]]) -> list[list[object]]:
    """One row per target and series of ``frame`` (one row per cell): target, series, its cell
    count, then ``cells`` of that series' rows."""
    return [[target, series, len(rows)] + cells(rows)
            for (target, series), rows in frame.groupby(["target", "series"], sort=True)]


def _saved_cells(rows: pd.DataFrame) -> list[object]:
    def sizes(quantity: str) -> str:
        other = sorted(set(rows.loc[rows[quantity].notna(), f"{quantity}_source"]) - {"measured"})
        return marked(_span(list(rows[quantity]), kib_text), other)

    both = rows.dropna(subset=[HOOKS, ALLOCATOR])
    if both.empty:
        return [sizes(HOOKS), sizes(ALLOCATOR), DASH, DASH, DASH]
    diff = both[HOOKS] - both[ALLOCATOR]
    share = (100 * diff / both[ALLOCATOR]).where(both[ALLOCATOR] != 0)
    agree = int(both["agree"].sum())
    verdict = "yes" if agree == len(both) else "no" if agree == 0 else f"{agree} of {len(both)}"
    return [sizes(HOOKS), sizes(ALLOCATOR), _span(list(diff), lambda d: f"{d / 1024:+.1f}"),
            _span(list(share), lambda x: f"{x:+.1f}%"), verdict]


def saved_bytes_section(ok: pd.DataFrame) -> str:
    """Saved bytes by the saved-tensor hooks beside the allocator's figure: a row per series of
    cells that has one (spans over its cells), and the cells that disagree by name."""
    by_cell: dict[tuple, dict[str, object]] = {}
    for row in _sorted(ok[ok["quantity"].isin([HOOKS, ALLOCATOR])]).itertuples(index=False):
        value = row_value(row)  # NaN where missing
        cell = by_cell.setdefault((row.target, row.name), {"target": row.target, "series": row.series,
                                                           "name": row.name})
        cell[row.quantity], cell[f"{row.quantity}_source"] = value.value, value.source
    frame = pd.DataFrame(list(by_cell.values()), columns=["target", "series", "name", HOOKS, f"{HOOKS}_source",
                                                          ALLOCATOR, f"{ALLOCATOR}_source"])
    frame = frame[frame[ALLOCATOR].notna()]
    if frame.empty:
        return ""
    frame = frame.assign(agree=[pd.notna(hooks) and disagreement(hooks, allocator) is None
                                for hooks, allocator in zip(frame[HOOKS], frame[ALLOCATOR])])
    headers = ["target", "series", "n cells", "hooks (KiB)", "allocator (KiB)", "difference (KiB)",
               "of allocator", "agree"]
    intro = ("The bytes saved for backward, measured twice and independently: by saved-tensor hooks (the "
             "\"saved\" column above) and at the allocator (bytes allocated in the model's forward pass and "
             "still held after it, less its output). They agree when "
             f"they differ by at most {AGREE_FRACTION:.0%} of the allocator figure or {AGREE_BYTES} B, "
             "whichever is larger. Both are measured; a figure from another source names it. "
             f"{SERIES_NOTE} \"agree\" then counts the cells that do, and the cells that do not are "
             "named below the table.")
    parts = ["## Cross-check: saved bytes", intro, _table(headers, _series_rows(frame, _saved_cells))]
    apart = frame[~frame["agree"] & frame[HOOKS].notna()]
    if len(apart):
        parts.append("Cells whose two figures disagree:\n\n" + "\n".join(
            escape(f"- {row.target} · {row.name}: hooks {kib_text(getattr(row, HOOKS))} KiB, allocator "
                   f"{kib_text(getattr(row, ALLOCATOR))} KiB") for row in apart.itertuples(index=False)))
    return "\n\n".join(parts)


def _timed_reason(row: tuple) -> str:
    if row.timed_reason == "min-time":
        return f"min-time (≥ {row.min_timed_ns / 1e6:g} ms)"
    return str(row.timed_reason)


def _calibration_cells(rows: pd.DataFrame) -> list[object]:
    calibrated = rows[rows["warmup_steps"].notna()]
    if calibrated.empty:  # placement recorded, calibration not
        decisions = [DASH] * 8
    else:
        bounds = _tally([f"{low}–{high}" for low, high in zip(calibrated["warmup_min"], calibrated["warmup_max"])])
        decisions = [f"{_span(list(calibrated['warmup_steps']), count_cell)} ({bounds})",
                     _tally(list(calibrated["warmup_stop"])), _span(list(calibrated["window"]), count_cell),
                     _span(list(calibrated["tolerance"]), lambda t: f"{100 * t:g}%"),
                     _span(list(calibrated["estimate_step_ns"]), lambda ns: sig3(ns / 1e6)),
                     _span(list(calibrated["timer_resolution_ns"]), count_cell),
                     _span(list(calibrated["timed_steps"]), count_cell),
                     _tally([_timed_reason(row) for row in calibrated.itertuples(index=False)])]
    cpus = _tally([None if c is None else ",".join(map(str, c)) for c in rows["cpus"]])
    return decisions + [_tally(list(rows["threads"])), cpus]


def calibration_section(calibration: pd.DataFrame) -> str:
    """Per series of cells: the warm-up run and why it stopped, the timed steps and why, threads
    and CPUs (spans and tallies over the series' cells)."""
    if calibration.empty:
        return ""
    headers = ["target", "series", "n cells", "warm-up (min–max)", "stopped", "window", "tolerance",
               "step estimate (ms)", "timer resolution (ns)", "timed steps", "timed because", "threads",
               "cpus"]
    intro = ("Warm-up ran between its minimum and maximum steps and stopped when \"stable\" (the median "
             "step of the last window was within the tolerance of the window before it) or when a bound "
             "was hit first (\"max-steps\", \"max-time\": timings may still drift). The step estimate is "
             "the median of the last warm-up window. Timed steps are the plan's, or more (\"min-time\") so "
             "that the timed steps last at least the time shown. Threads and CPUs are as the cell ran. "
             f"{SERIES_NOTE} A decision that differs between them is given as each value with its count "
             "(\"stable ×38, max-steps ×2\").")
    rows = _series_rows(calibration, _calibration_cells)
    return "\n\n".join(["## Calibration", intro, _table(headers, rows)])


def _target_checks(target: str, rows: pd.DataFrame) -> str:
    cells = set(zip(rows["run_id"], rows["cell_id"]))
    advice: dict[tuple[str, str, str], set] = {}
    for row in rows[rows["status"] == "advice"].itertuples(index=False):
        value, text = ("" if x is None else str(x) for x in (row.value, row.advice))
        advice.setdefault((row.check, value, text), set()).add((row.run_id, row.cell_id))
    items = [escape(f"- {name}{f' = {value}' if value else ''}: {text} ({len(hit)} of {len(cells)} cells)")
             for (name, value, text), hit in sorted(advice.items())]
    parts = [f"### {escape(target)}", "\n".join(items) or "No advice: every check that could run was ok."]
    unavailable = sorted(set(rows.loc[rows["status"] == "unavailable", "check"]))
    if unavailable:
        parts.append(escape(f"Unavailable on this target: {', '.join(unavailable)}."))
    return "\n\n".join(parts)


def system_checks_section(checks: pd.DataFrame) -> str:
    """Per target, the advice of the system checks the device ran before its cells."""
    if checks.empty:
        return ""
    intro = ("Checks the device ran before each cell. Advice names a setting that can disturb timings; "
             "weigh the numbers of those cells accordingly.")
    parts = ["## System checks", intro]
    parts += [_target_checks(str(target), rows) for target, rows in checks.groupby("target", sort=True)]
    return "\n\n".join(parts)

