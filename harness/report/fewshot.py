"""The report section on few-shot episodes: per method, over the episodes (seeds) of one model,
data, resolution, protocol and backbone (pre-trained or meta-trained), the query accuracy before
any update (ProtoNet's prototype head) and after fine-tuning (a method at several learning rates
is a row per rate), each method's paired difference to TinyTrain over the episodes both ran
(bootstrap CI resampling episodes), and what it costs: bytes kept for backward and counted
backward FLOPs per sample (medians over the episodes), and TinyTrain's selection time against a
full forward+backward on the same support set; and a figure of each method's mean accuracy after
(CI bars) against its saved bytes per sample."""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd

from ..stats import DEFAULT_CONFIDENCE, Interval, joint_ci, mean_ci
from .figures import AccuracyPoint, accuracy_figure
from .tables import DASH, Value, escape, kib_text, label_order, markdown_table, sig3

Save = Callable[..., str]
"""``save(figure, alt text, *name parts)``: writes a figure beside the report, returns its image line."""
FEWSHOT_SAVED_AXIS = ("saved for backward per sample, median over episodes (KiB, log scale;\n"
                      "autograd-saved tensors, parameters and input excluded")
FEWSHOT_ACCURACY_AXIS = f"query accuracy after fine-tuning\n(%, mean over episodes, {DEFAULT_CONFIDENCE:.0%} CI"

KEYS = ["target", "model", "data", "resolution", "episode", "backbone"]
REFERENCE, PAPER_CRITERION = "tinytrain", "criterion=fisher"
QUANTITIES = ["accuracy_before", "accuracy_after", "measured_saved_bytes", "counted_backward_flops",
              "selection_ns", "selection_reference_ns"]


def _method(row) -> str:
    return f"{row['label']} · lr {row['lr']:g}"


def _per_episode(rows: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """{method: frame indexed by seed, one column per quantity} from the latest records."""
    rows = rows.sort_values(["run_id", "cell_id"]).assign(method=rows.apply(_method, axis=1))
    out = {}
    for method, group in rows.groupby("method"):
        wide = group.pivot_table(index="seed", columns="quantity", values="value", aggfunc="last")
        batch = group.groupby("seed")["batch"].last()
        out[method] = wide.assign(batch=batch)
    return out


def _percent_ci(ci: Interval) -> str:
    return f"{100 * ci.estimate:.1f} [{100 * ci.low:.1f}–{100 * ci.high:.1f}]"


def _difference(reference: pd.DataFrame, other: pd.DataFrame) -> str:
    """Mean over shared episodes of reference − other accuracy, in points, with its CI."""
    shared = sorted(set(reference.index) & set(other.index))
    if not shared:
        return DASH
    a, b = reference.loc[shared, "accuracy_after"].to_numpy(), other.loc[shared, "accuracy_after"].to_numpy()
    ci = joint_ci([a, b], lambda x, y: (x - y).mean(1))
    return f"{100 * ci.estimate:+.1f} [{100 * ci.low:+.1f}–{100 * ci.high:+.1f}] (n={len(shared)})"


def _mean_percent(frame: pd.DataFrame, quantity: str) -> str:
    if quantity not in frame or frame[quantity].isna().all():
        return DASH
    return f"{100 * frame[quantity].mean():.1f}"


def _median(frame: pd.DataFrame, quantity: str, per_sample: bool) -> float | None:
    if quantity not in frame or frame[quantity].isna().all():
        return None
    values = frame[quantity] / frame["batch"] if per_sample else frame[quantity]
    return float(values.median())


def _reference(methods: list[str], episodes: dict[str, pd.DataFrame]) -> str | None:
    """The TinyTrain row the others are paired with: one with the paper's Fisher criterion before
    an ablation's, then the one with the most episodes, then the first in sort order."""
    candidates = [m for m in methods if m.startswith(REFERENCE + "(")]
    return max(candidates, key=lambda m: (PAPER_CRITERION in m, len(episodes[m])), default=None)


def _section(key: tuple, rows: pd.DataFrame, save: Save) -> str:
    episodes = _per_episode(rows)
    methods = label_order(episodes)
    after = {m: mean_ci(episodes[m]["accuracy_after"].to_numpy()) for m in methods}
    reference = _reference(methods, episodes)
    full = next((m for m in methods if m.startswith("full ·")), None)
    full_saved = _median(episodes[full], "measured_saved_bytes", True) if full else None
    full_flops = _median(episodes[full], "counted_backward_flops", True) if full else None

    def times_full(value, full):
        if value is None or not full or not value:
            return DASH
        ratio = full / value
        return f"{ratio:,.0f}×" if ratio >= 100 else f"{ratio:.1f}×"

    def selection(frame):
        sel, ref = _median(frame, "selection_ns", False), _median(frame, "selection_reference_ns", False)
        if sel is None or ref is None:
            return DASH
        ratio = float((frame["selection_ns"] / frame["selection_reference_ns"]).median())
        return f"{sel / 1e6:.1f} / {ref / 1e6:.1f} ms ({ratio:.2f}×)"

    columns = [("method", [escape(m) for m in methods]),
               ("episodes", [str(len(episodes[m])) for m in methods]),
               ("before (ProtoNet) %", [_mean_percent(episodes[m], "accuracy_before") for m in methods]),
               (f"after % [{DEFAULT_CONFIDENCE:.0%} CI]", [_percent_ci(after[m]) for m in methods])]
    if reference:
        columns.append((f"{escape(reference)} − method, points",
                        [DASH if m == reference else _difference(episodes[reference], episodes[m]) for m in methods]))
    saved = [_median(episodes[m], "measured_saved_bytes", True) for m in methods]
    flops = [_median(episodes[m], "counted_backward_flops", True) for m in methods]
    columns += [("saved KiB / sample", [DASH if v is None else kib_text(v) for v in saved]),
                ("full ÷ saved", [times_full(v, full_saved) for v in saved]),
                ("backward MFLOP / sample", [DASH if v is None else sig3(v / 1e6) for v in flops]),
                ("full ÷ FLOP", [times_full(v, full_flops) for v in flops]),
                ("selection / fwd+bwd", [selection(episodes[m]) for m in methods])]
    target, model, data, resolution, episode, backbone = key
    setting = f"{target} · {model} · {data} · {resolution} px · {episode} · {backbone} backbone"
    points = [AccuracyPoint(model, m, Value(v, "measured"), Value(after[m].estimate, "measured"),
                            after[m].low, after[m].high)
              for m, v in zip(methods, saved) if v]
    parts = [f"### {escape(setting)}", markdown_table(columns)]
    if points:
        fig = accuracy_figure(f"Few-shot accuracy vs measured backward memory\n{setting}", points,
                              x_axis=FEWSHOT_SAVED_AXIS, y_axis=FEWSHOT_ACCURACY_AXIS)
        parts.append(save(fig, f"Few-shot accuracy vs measured backward memory, {setting}", "fewshot-accuracy",
                          target, model, data, f"r{resolution}", episode, backbone))
    return "\n\n".join(parts)


def is_episodic(table: pd.DataFrame) -> pd.Series:
    """Rows of few-shot cells: only they carry an episode protocol (plans and compile enforce it;
    tables from journals older than the field have no such column)."""
    if "episode" not in table:
        return pd.Series(False, index=table.index)
    return table["episode"].fillna("") != ""


def fewshot_section(ok: pd.DataFrame, save: Save) -> str:
    """``""`` unless the table has few-shot cells; ``save`` writes each section's figure."""
    rows = ok[is_episodic(ok) & ok["quantity"].isin(QUANTITIES)]
    if rows.empty:
        return ""
    rows = rows.assign(backbone=rows["checkpoint"].astype(object).fillna("pretrained"))
    intro = ("Few-shot episodes: each seed is one episode (its classes and images), the same for every method. "
             "Every method starts from the support set's ProtoNet prototypes (\"before\" is that head's query "
             "accuracy) and fine-tunes on the support set; \"after\" is the query accuracy, the mean over the "
             f"episodes with a {DEFAULT_CONFIDENCE:.0%} bootstrap CI over episodes. The difference to TinyTrain is "
             "paired: per episode, then averaged, its CI resampling the shared episodes; where several "
             "TinyTrain rows ran, the reference (named in the column header) is one with the paper's Fisher "
             "criterion, and among those the one with the most episodes. Saved bytes (measured, "
             "saved-tensor hooks) and counted backward FLOPs are per sample, medians over the episodes; the "
             "selection column is TinyTrain's selection time and a full forward+backward on the same support "
             "set (medians over episodes of each cell's medians, and the median of their per-cell ratio). Each "
             "backbone (pre-trained on the source classes, or meta-trained from it) has its own section, "
             "and its figure plots the \"after\" column against the saved bytes per sample, the bars "
             "spanning the confidence interval.")
    sections = [_section(key, group, save) for key, group in rows.groupby(KEYS, sort=True)]
    return "\n\n".join(["## Few-shot episodes", intro] + sections)
