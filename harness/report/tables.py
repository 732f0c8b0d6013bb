"""Per-label values of one result group and the Markdown table that shows them.

A *group* is the "ok" rows of the long table that share (target, model, data, resolution, batch).
Each label of a group becomes one table row; quantities are looked up by name in ``Values``.
"""
from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import pandas as pd

from ..stats import DEFAULT_CONFIDENCE, Interval, UndefinedRatio, ratio_ci

FULL = "full"
DASH = "—"
NON_MEASURED = frozenset({"emulated", "modelled"})
SOURCE_PREFERENCE = ("measured", "analytic", "emulated", "modelled")
"""Order that breaks ties between equally common sources of a column (observed before estimated)."""
TIME_PARTS = (
    ("forward_ns", "forward"),
    ("backward_ns", "backward"),
    ("update_ns", "update"),
    ("step_ns", "step"),
)
RECORD_KEYS = ["label", "run_id", "cell_id"]


@dataclass(frozen=True)
class Value:
    """One quantity of one record: ``value`` (NaN when missing), its source tag, its spread and, for
    timings, the raw samples (integer ns) and the record's warm-up steps."""

    value: float
    source: str
    n: float = math.nan
    q1: float = math.nan
    q3: float = math.nan
    warmup: float = math.nan
    samples: tuple[int, ...] | None = None

    @property
    def present(self) -> bool:
        """Whether the value was recorded."""
        return not math.isnan(self.value)


MISSING = Value(math.nan, "")
Values = dict[str, dict[str, Value]]
"""label -> quantity -> Value."""


def _number(raw: object) -> float:
    return math.nan if raw is None or pd.isna(raw) else float(raw)


def _text(raw: object) -> str:
    return "" if raw is None or pd.isna(raw) else str(raw)


def label_order(labels: Iterable[str]) -> list[str]:
    """The ``full`` label first, then the other labels sorted by name."""
    unique = set(labels)
    return ([FULL] if FULL in unique else []) + sorted(unique - {FULL})


def latest_records(group: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Keep one record per label (the greatest run_id, then cell_id); note each label that had more."""
    records = group[RECORD_KEYS].drop_duplicates().sort_values(RECORD_KEYS)
    chosen = records.drop_duplicates("label", keep="last")
    counts = records["label"].value_counts()
    notes = [
        f"{label}: {counts[label]} records, showing run {run_id} cell {cell_id}"
        for label, run_id, cell_id in chosen.itertuples(index=False, name=None)
        if counts[label] > 1
    ]
    keep = set(chosen.itertuples(index=False, name=None))
    mask = [key in keep for key in zip(group["label"], group["run_id"], group["cell_id"])]
    return group[mask], notes


def row_value(row: tuple) -> Value:
    """The ``Value`` of one row of the long table (a named tuple from ``itertuples``)."""
    return Value(_number(row.value), _text(row.source), _number(row.n), _number(row.q1), _number(row.q3),
                 _number(row.warmup), row.samples)


def values_by_label(records: pd.DataFrame) -> Values:
    """Index the rows of one record per label by label and quantity."""
    values: Values = {}
    for row in records.itertuples(index=False):
        values.setdefault(row.label, {})[row.quantity] = row_value(row)
    return values


def missing_reasons(records: pd.DataFrame) -> list[str]:
    """``"quantity: reason"`` for each missing value that has a reason, deduplicated and sorted."""
    lines = {
        f"{row.quantity}: {_text(row.reason)}"
        for row in records.itertuples(index=False)
        if math.isnan(_number(row.value)) and _text(row.reason) and row.quantity != "error"
    }
    return sorted(lines)


def sig3(x: float) -> str:
    """``x`` with three significant digits, in fixed-point notation."""
    if x == 0:
        return "0"
    rounded = float(f"{x:.3g}")
    decimals = max(0, 2 - math.floor(math.log10(abs(rounded))))
    return f"{rounded:.{decimals}f}"


def _ratio_digits(ratio: float) -> str:
    return f"{ratio:.2f}" if ratio >= 0.1 else f"{ratio:#.2g}"


def format_ratio(ratio: float) -> str:
    """A ratio such as ``×0.42``; two significant digits below 0.1."""
    return "×" + _ratio_digits(ratio)


def format_ci(ci: Interval, digits: Callable[[float], str] = _ratio_digits) -> str:
    """A ratio with its confidence interval, e.g. ``×0.42 [0.40–0.44]``."""
    return f"×{digits(ci.estimate)} [{digits(ci.low)}–{digits(ci.high)}]"


def format_time(v: Value) -> str:
    """Median in ms with its IQR, e.g. ``12.3 [11.9–12.8]``."""
    median = sig3(v.value / 1e6)
    if math.isnan(v.q1) or math.isnan(v.q3):
        return median
    return f"{median} [{sig3(v.q1 / 1e6)}–{sig3(v.q3 / 1e6)}]"


def kib_text(size: float) -> str:
    """Bytes as KiB with one decimal."""
    return f"{size / 1024:.1f}"


def kib(v: Value) -> str:
    return kib_text(v.value)


def _mflop(v: Value) -> str:
    return sig3(v.value / 1e6)


def _percent(v: Value) -> str:
    return f"{100 * v.value:.1f}"


def escape(text: str) -> str:
    """Text safe inside a Markdown table cell (no pipes, no line breaks)."""
    return " ".join(text.replace("|", "\\|").split())


def column_tag(values: Values, labels: list[str], quantity: str) -> str:
    """The source tag a column header shows: the most common source of the present values."""
    column = [values[label].get(quantity, MISSING) for label in labels]
    sources = Counter(v.source for v in column if v.present and v.source)
    if not sources:
        sources = Counter(v.source for v in column if v.source)
    if not sources:
        return ""
    return min(sources, key=lambda source: (-sources[source], _preference(source), source))


def _preference(source: str) -> int:
    return SOURCE_PREFERENCE.index(source) if source in SOURCE_PREFERENCE else len(SOURCE_PREFERENCE)


def _tags_to_mark(sources: Iterable[str], header_tag: str) -> list[str]:
    return sorted({s for s in sources if s and (s != header_tag or s in NON_MEASURED)})


def marked(text: str, tags: list[str]) -> str:
    """``text`` followed by each tag in parentheses, e.g. ``12.3 (emulated)``."""
    return " ".join([text] + [f"({tag})" for tag in tags])


def _header(name: str, unit: str, tag: str) -> str:
    return f"{name} ({unit}, {tag})" if tag else f"{name} ({unit})"


Column = tuple[str, list[str]]


def _quantity_column(
    values: Values, labels: list[str], quantity: str, name: str, unit: str, fmt: Callable[[Value], str]
) -> Column:
    tag = column_tag(values, labels, quantity)
    cells = []
    for label in labels:
        v = values[label].get(quantity, MISSING)
        cells.append(marked(fmt(v), _tags_to_mark([v.source], tag)) if v.present else DASH)
    return _header(name, unit, tag), cells


def _exact_ratio(v: Value, ref: Value) -> str:
    """The ratio of two single values (one untimed pass each: nothing sampled, no interval)."""
    return format_ratio(v.value / ref.value)


def _sampled_ratio(v: Value, ref: Value) -> str:
    """The ratio of the medians of two independent timing samples with its bootstrap CI."""
    return format_ci(ratio_ci(v.samples, ref.samples))


def _ratio_cell(v: Value, ref: Value, tag: str, ratio: Callable[[Value, Value], str]) -> str:
    if not (v.present and ref.present) or ref.value == 0:
        return DASH
    try:
        text = ratio(v, ref)
    except UndefinedRatio:  # some bootstrap resample of the reference has median 0
        return DASH
    return marked(text, _tags_to_mark([v.source, ref.source], tag))


def ratio_cell(v: Value, ref: Value, sampled: bool, tag: str = "measured") -> str:
    """``v`` against ``ref``: a ratio of medians with its bootstrap CI (``sampled``, timings) or an
    exact ratio of single values; ``—`` where either is missing."""
    return _ratio_cell(v, ref, tag, _sampled_ratio if sampled else _exact_ratio)


def _ratio_column(values: Values, labels: list[str], quantity: str, name: str, sampled: bool) -> Column:
    """Each label's ratio to the ``full`` row; the ``full`` row's own is 1 by definition."""
    ratio, suffix = ((_sampled_ratio, f"[{DEFAULT_CONFIDENCE:.0%} CI]") if sampled
                     else (_exact_ratio, "(exact)"))
    tag = column_tag(values, labels, quantity)
    ref = values.get(FULL, {}).get(quantity, MISSING)
    cells = [_ratio_cell(values[label].get(quantity, MISSING), ref, tag,
                         _exact_ratio if label == FULL else ratio) for label in labels]
    return f"{name} ×{FULL} {suffix}", cells


def count_cell(count: object) -> str:
    """A count such as n or warm-up steps; ``—`` when not recorded (None or NaN)."""
    number = _number(count)
    return DASH if math.isnan(number) else str(int(number))


def group_columns(values: Values, labels: list[str], accuracy: bool = True) -> list[Column]:
    """The columns of one group's table, each as (header, cells in label order); the accuracy
    column only when ``accuracy``."""
    columns: list[Column] = [
        ("label", [escape(label) for label in labels]),
        ("n", [count_cell(values[label].get("step_ns", MISSING).n) for label in labels]),
        ("warm-up", [count_cell(values[label].get("step_ns", MISSING).warmup) for label in labels]),
    ]
    for quantity, name in TIME_PARTS:
        columns.append(_quantity_column(values, labels, quantity, name, "ms", format_time))
    columns.append(_ratio_column(values, labels, "backward_ns", "backward", sampled=True))
    columns.append(_ratio_column(values, labels, "step_ns", "step", sampled=True))
    columns.append(_quantity_column(values, labels, "measured_saved_bytes", "saved", "KiB", kib))
    columns.append(_ratio_column(values, labels, "measured_saved_bytes", "saved", sampled=False))
    columns.append(_quantity_column(values, labels, "counted_backward_flops", "bwd FLOP", "MFLOP", _mflop))
    columns.append(_ratio_column(values, labels, "counted_backward_flops", "bwd FLOP", sampled=False))
    if accuracy:
        columns.append(_quantity_column(values, labels, "accuracy_after", "acc. after", "%", _percent))
    return columns


def markdown_table(columns: list[Column], left_aligned: int = 1) -> str:
    """A Markdown table; the first ``left_aligned`` columns align left, the rest right."""
    headers = [escape(header) for header, _ in columns]
    rules = [":--" if i < left_aligned else "--:" for i in range(len(columns))]
    rows = list(zip(*(cells for _, cells in columns)))
    lines = [headers, rules] + [list(row) for row in rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def group_table(values: Values, labels: list[str], accuracy: bool = True) -> str:
    """The Markdown table of one group: one row per label, ``full`` first."""
    return markdown_table(group_columns(values, labels, accuracy))
