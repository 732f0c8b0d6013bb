"""Report sections that check the measurements themselves, one row per cell: the timer's overhead,
saved bytes cross-checked at the allocator, the calibration decisions and the system checks.

Each section is rendered only when some cell recorded its data (older journals lack it) and is
``""`` otherwise. Rows are sorted by target and cell name, so the same tables give the same text.
"""
from __future__ import annotations

import pandas as pd

from ..agreement import AGREE_BYTES, AGREE_FRACTION, disagreement
from ..stats import DEFAULT_CONFIDENCE, median, paired_ratio_ci
from .tables import (
    DASH,
    MISSING,
    Value,
    count_cell,
    escape,
    format_ci,
    kib,
    markdown_table,
    marked,
    row_value,
    sig3,
)

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


def paired_section(paired: pd.DataFrame) -> str:
    """Per cell, a gradient-filtered plan against its exact twin, run as interleaved pairs: median
    backward times and the speedups (exact / filtered) of backward and of the whole step, with
    their paired CIs."""
    if paired.empty:
        return ""
    rows = []
    for row in _sorted(paired).itertuples(index=False):
        backward = paired_ratio_ci(row.exact_backward_ns, row.filtered_backward_ns)
        step = paired_ratio_ci(row.exact_step_ns, row.filtered_step_ns)
        rows.append([row.target, row.name, _ms(row.exact_backward_ns), _ms(row.filtered_backward_ns),
                     format_ci(backward), format_ci(step), backward.sizes[0], count_cell(row.warmup), row.order])
    ci = f"[{DEFAULT_CONFIDENCE:.0%} CI]"
    headers = ["target", "cell", "exact backward ms", "filtered backward ms", f"backward speedup {ci}",
               f"step speedup {ci}", "n pairs", "warm-up", "order"]
    intro = ("Each pair is one training step of the cell's plan (gradient-filtered convs) and one of its exact "
             "twin (the same layers trained by exact backprop with stock PyTorch layers, same layout, same "
             "batch), back to back in the order shown, both timed by the same stamps. A speedup is the median "
             "of the per-pair ratios exact / filtered; its interval resamples the pairs (paired bootstrap).")
    return "\n\n".join(["## Gradient filtering against exact backprop (paired)", intro, _table(headers, rows)])


def _saved_cells(hooks: Value, allocator: Value) -> list[str]:
    sizes = [marked(kib(v), [] if v.source == "measured" else [v.source]) if v.present else DASH
             for v in (hooks, allocator)]
    if not (hooks.present and allocator.present):
        return sizes + [DASH, DASH, DASH]
    diff = hooks.value - allocator.value
    share = f"{100 * diff / allocator.value:+.1f}%" if allocator.value else DASH
    return sizes + [f"{diff / 1024:+.1f}", share, "no" if disagreement(hooks.value, allocator.value) else "yes"]


def saved_bytes_section(ok: pd.DataFrame) -> str:
    """Saved bytes by the saved-tensor hooks beside the allocator's figure, per cell that has one."""
    by_cell: dict[tuple, dict[str, Value]] = {}
    for row in _sorted(ok[ok["quantity"].isin([HOOKS, ALLOCATOR])]).itertuples(index=False):
        by_cell.setdefault((row.target, row.name), {})[row.quantity] = row_value(row)
    rows = [[target, name] + _saved_cells(values.get(HOOKS, MISSING), values[ALLOCATOR])
            for (target, name), values in by_cell.items() if ALLOCATOR in values]
    if not rows:
        return ""
    headers = ["target", "cell", "hooks (KiB)", "allocator (KiB)", "difference (KiB)", "of allocator",
               "agree"]
    intro = ("The bytes saved for backward, measured twice and independently: by saved-tensor hooks (the "
             "\"saved\" column above) and at the allocator (bytes allocated in the model's forward pass and "
             "still held after it, less its output). They agree when "
             f"they differ by at most {AGREE_FRACTION:.0%} of the allocator figure or {AGREE_BYTES} B, "
             "whichever is larger. Both are measured; a figure from another source names it.")
    return "\n\n".join(["## Cross-check: saved bytes", intro, _table(headers, rows)])


def _timed_reason(row: tuple) -> str:
    if row.timed_reason == "min-time":
        return f"min-time (≥ {row.min_timed_ns / 1e6:g} ms)"
    return str(row.timed_reason)


def _calibration_cells(row: tuple) -> list[object]:
    if row.warmup_steps is None:  # placement recorded, calibration not
        decisions = [DASH] * 8
    else:
        decisions = [f"{row.warmup_steps} ({row.warmup_min}–{row.warmup_max})", row.warmup_stop,
                     row.window, f"{100 * row.tolerance:g}%", sig3(row.estimate_step_ns / 1e6),
                     row.timer_resolution_ns, row.timed_steps, _timed_reason(row)]
    cpus = DASH if row.cpus is None else ",".join(map(str, row.cpus))
    threads = DASH if row.threads is None else row.threads
    return [row.target, row.name] + decisions + [threads, cpus]


def calibration_section(calibration: pd.DataFrame) -> str:
    """Per cell: the warm-up run and why it stopped, the timed steps and why, threads and CPUs."""
    if calibration.empty:
        return ""
    headers = ["target", "cell", "warm-up (min–max)", "stopped", "window", "tolerance",
               "step estimate (ms)", "timer resolution (ns)", "timed steps", "timed because", "threads",
               "cpus"]
    rows = [_calibration_cells(row) for row in _sorted(calibration).itertuples(index=False)]
    intro = ("Warm-up ran between its minimum and maximum steps and stopped when \"stable\" (the median "
             "step of the last window was within the tolerance of the window before it) or when a bound "
             "was hit first (\"max-steps\", \"max-time\": timings may still drift). The step estimate is "
             "the median of the last warm-up window. Timed steps are the plan's, or more (\"min-time\") so "
             "that the timed steps last at least the time shown. Threads and CPUs are as the cell ran.")
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

