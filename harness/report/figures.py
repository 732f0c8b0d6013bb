"""The report's figures, built from per-label ``Values`` and returned as PNG bytes.

Figures never touch the file system; ``png_bytes`` renders one deterministically (fixed style, fixed
dpi, no software/date metadata) and closes it.
"""
from __future__ import annotations

import functools
import io
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402  (the backend must be chosen first)
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.transforms import Bbox  # noqa: E402

from .tables import MISSING, NON_MEASURED, TIME_PARTS, Value, Values, label_order  # noqa: E402

DPI = 100
WIDTH_IN = 9.0
PART_COLOURS = {"forward": "#4C72B0", "backward": "#DD8452", "update": "#55A868"}
MODEL_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
MODEL_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#17becf")


T = TypeVar("T")


def _default_style(func: Callable[..., T]) -> Callable[..., T]:
    """Run ``func`` under matplotlib's default style, so a user's matplotlibrc cannot change a PNG."""

    @functools.wraps(func)
    def wrapper(*args: object, **kwargs: object) -> T:
        with plt.style.context("default"):
            return func(*args, **kwargs)

    return wrapper


def _sources(values: list[Value]) -> str:
    """The distinct source tags of the present values, e.g. ``measured`` or ``emulated/measured``."""
    return "/".join(sorted({v.source for v in values if v.present and v.source})) or "no data"


def _suffix(values: list[Value]) -> str:
    """`` (emulated)`` etc. when any present value is not observed on the device."""
    tags = sorted({v.source for v in values if v.present and v.source in NON_MEASURED})
    return "".join(f" ({tag})" for tag in tags)


def wrapped(label: str, width: int = 40) -> str:
    """``label`` broken after its commas and opening brackets onto lines of at most ``width``
    characters where it can be, so a long method label (TinyTrain's names four parameters) stays
    inside the figure."""
    lines, line = [], ""
    for piece in re.split(r"(?<=[,(])", label):
        if line and len(line) + len(piece) > width:
            lines.append(line)
            line = piece
        else:
            line += piece
    return "\n".join(lines + [line])


def _ms(v: Value) -> float:
    return v.value / 1e6 if v.present else 0.0


def _new_figure(height_in: float) -> tuple[Figure, plt.Axes]:
    return plt.subplots(figsize=(WIDTH_IN, height_in), dpi=DPI)


@_default_style
def latency_figure(title: str, labels: list[str], values: Values) -> Figure:
    """Stacked horizontal bars of forward/backward/update medians per label, IQR bar on the step total."""
    ticks = [wrapped(label + _suffix([values[label].get(q, MISSING) for q, _ in TIME_PARTS]))
             for label in labels]
    row_in = max(0.45, 0.15 + 0.17 * max(tick.count("\n") + 1 for tick in ticks))
    fig, ax = _new_figure(max(3.0, 1.6 + row_in * len(labels)))
    rows = range(len(labels))
    left = [0.0] * len(labels)
    for quantity, part in TIME_PARTS[:3]:
        column = [values[label].get(quantity, MISSING) for label in labels]
        widths = [_ms(v) for v in column]
        ax.barh(rows, widths, left=left, height=0.6, color=PART_COLOURS[part],
                label=f"{part} median ({_sources(column)})")
        left = [a + b for a, b in zip(left, widths)]
    _step_error_bars(ax, labels, values)
    ax.set_yticks(list(rows), ticks)
    ax.invert_yaxis()
    ax.set_xlabel("time per training step (ms), median over timed steps")
    ax.set_title(title, fontsize=10)
    ax.grid(axis="x", alpha=0.3)
    ax.set_axisbelow(True)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _step_error_bars(ax: plt.Axes, labels: list[str], values: Values) -> None:
    steps = [(row, values[label].get("step_ns", MISSING)) for row, label in enumerate(labels)]
    steps = [(row, v) for row, v in steps if v.present and not (math.isnan(v.q1) or math.isnan(v.q3))]
    if not steps:
        return
    x = [v.value / 1e6 for _, v in steps]
    below = [(v.value - v.q1) / 1e6 for _, v in steps]
    above = [(v.q3 - v.value) / 1e6 for _, v in steps]
    label = f"step total, median and IQR ({_sources([v for _, v in steps])})"
    ax.errorbar(x, [row for row, _ in steps], xerr=[below, above], fmt="d", color="black",
                markersize=4, capsize=4, label=label)


@dataclass(frozen=True)
class AccuracyPoint:
    """One label of one model: measured backward memory against accuracy after training; ``low``
    and ``high`` bound the accuracy's confidence interval where it has one (a mean over episodes
    or seeds)."""

    model: str
    label: str
    saved: Value
    accuracy: Value
    low: float = math.nan
    high: float = math.nan

    @property
    def plottable(self) -> bool:
        """Both values present and the memory positive (the x axis is logarithmic)."""
        return self.saved.present and self.accuracy.present and self.saved.value > 0


def accuracy_points(by_model: dict[str, Values]) -> list[AccuracyPoint]:
    """The plottable points of each model's labels, models sorted, labels ``full`` first."""
    points = [
        AccuracyPoint(model, label, values[label].get("measured_saved_bytes", MISSING),
                      values[label].get("accuracy_after", MISSING))
        for model, values in sorted(by_model.items())
        for label in label_order(values)
    ]
    return [p for p in points if p.plottable]


SAVED_AXIS = "saved for backward (KiB, log scale; autograd-saved tensors, parameters and input excluded"
ACCURACY_AXIS = "accuracy after training (%"


@_default_style
def accuracy_figure(title: str, points: list[AccuracyPoint], x_axis: str = SAVED_AXIS,
                    y_axis: str = ACCURACY_AXIS) -> Figure:
    """Accuracy after training against measured saved bytes (log axis), one marker per model, a
    vertical bar where a point has a confidence interval. ``x_axis`` and ``y_axis`` are the axis
    labels up to their source tags."""
    fig, ax = _new_figure(5.5)
    models = sorted({p.model for p in points})
    for i, model in enumerate(models):
        mine = [p for p in points if p.model == model]
        marker, colour = MODEL_MARKERS[i % len(MODEL_MARKERS)], MODEL_COLOURS[i % len(MODEL_COLOURS)]
        xs, ys = zip(*(_xy(p) for p in mine))
        ax.scatter(xs, ys, marker=marker, color=colour, s=40, zorder=3,
                   label=model + _suffix([v for p in mine for v in (p.saved, p.accuracy)]))
        bounded = [p for p in mine if not (math.isnan(p.low) or math.isnan(p.high))]
        if bounded:
            x, y = zip(*(_xy(p) for p in bounded))
            ax.errorbar(x, y, yerr=[[yy - 100 * p.low for p, yy in zip(bounded, y)],
                                    [100 * p.high - yy for p, yy in zip(bounded, y)]],
                        fmt="none", ecolor=colour, elinewidth=1, capsize=3, zorder=2)
    ax.set_xscale("log")
    ax.margins(x=0.15, y=0.1)
    ax.set_xlabel(f"{x_axis}; {_sources([p.saved for p in points])})", fontsize=9)
    ax.set_ylabel(f"{y_axis}; {_sources([p.accuracy for p in points])})", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.set_axisbelow(True)
    ax.legend(title="model", loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    fig.tight_layout()
    _label_points(fig, ax, points, models)
    return fig


def _xy(p: AccuracyPoint) -> tuple[float, float]:
    """A point's place on the axes: KiB saved, accuracy in %."""
    return p.saved.value / 1024, 100 * p.accuracy.value


LABEL_OFFSETS = ((6, 5), (6, -11), (-6, 5), (-6, -11), (6, 16), (6, -22), (-6, 16), (-6, -22))
"""Where a point's label may go, in points from it, in the order tried: right of it above and
below, left of it, then further up and down."""


def _label_points(fig: Figure, ax: plt.Axes, points: list[AccuracyPoint], models: list[str]) -> None:
    """Label each point at the first offset whose text stays inside the axes and overlaps neither
    a label placed before it nor another point's marker (else at its first offset). Models
    alternate which offset they try first (above, below), so coinciding points stay readable."""
    fig.draw_without_rendering()  # fixes the axes' limits, so the text extents are final
    renderer = fig.canvas.get_renderer()
    frame = ax.get_window_extent(renderer)
    centres = [ax.transData.transform(_xy(p)) for p in points]
    half = 4 * fig.dpi / 72  # a marker's half-width (s=40 is about 6.3 points across), in pixels
    markers = [Bbox.from_extents(x - half, y - half, x + half, y + half) for x, y in centres]
    placed: list[Bbox] = []
    for k, p in enumerate(points):
        i = models.index(p.model)
        text = wrapped(p.label + _suffix([p.saved, p.accuracy]))
        xy = _xy(p)
        offsets = LABEL_OFFSETS[i % 2:] + LABEL_OFFSETS[:i % 2]
        others = placed + markers[:k] + markers[k + 1:]

        def annotate(dx: float, dy: float):
            return ax.annotate(text, xy, xytext=(dx, dy), textcoords="offset points", fontsize=8,
                               ha="left" if dx > 0 else "right", color=MODEL_COLOURS[i % len(MODEL_COLOURS)])

        for dx, dy in offsets:
            label = annotate(dx, dy)
            box = label.get_window_extent(renderer)
            if frame.contains(box.x0, box.y0) and frame.contains(box.x1, box.y1) and \
                    not any(box.overlaps(other) for other in others):
                break
            label.remove()
        else:
            label = annotate(*offsets[0])
        placed.append(label.get_window_extent(renderer))


@_default_style
def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG at ``DPI`` without version/date metadata; closes the figure."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=DPI, metadata={"Software": None})
    finally:
        plt.close(fig)
    return buffer.getvalue()
