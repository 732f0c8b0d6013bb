"""The report section on few-shot episodes: per method, over the episodes (seeds) of one model,
data, resolution, protocol and backbone (pre-trained or meta-trained), the query accuracy before
any update (ProtoNet's prototype head) and after fine-tuning (a method at several learning rates
is a row per rate), each method's paired difference to TinyTrain over the episodes both ran
(bootstrap CI resampling episodes), and what it costs: bytes kept for backward and counted
backward FLOPs per sample (medians over the episodes), and TinyTrain's selection time against a
full forward+backward on the same support set."""
from __future__ import annotations

import numpy as np
import pandas as pd

from ..stats import DEFAULT_CONFIDENCE, joint_ci
from .tables import DASH, escape, label_order, markdown_table

KEYS = ["target", "model", "data", "resolution", "episode", "backbone"]
REFERENCE = "tinytrain"
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


def _mean_ci(values: np.ndarray) -> str:
    ci = joint_ci([values], lambda a: a.mean(1))
    return f"{100 * ci.estimate:.1f} [{100 * ci.low:.1f}–{100 * ci.high:.1f}]"


def _difference(reference: pd.DataFrame, other: pd.DataFrame) -> str:
    """Mean over shared episodes of reference − other accuracy, in points, with its CI."""
    shared = sorted(set(reference.index) & set(other.index))
    if not shared:
        return DASH
    a, b = reference.loc[shared, "accuracy_after"].to_numpy(), other.loc[shared, "accuracy_after"].to_numpy()
    ci = joint_ci([a, b], lambda x, y: (x - y).mean(1))
    return f"{100 * ci.estimate:+.1f} [{100 * ci.low:+.1f}–{100 * ci.high:+.1f}] (n={len(shared)})"


def _median(frame: pd.DataFrame, quantity: str, per_sample: bool) -> float | None:
    if quantity not in frame or frame[quantity].isna().all():
        return None
    values = frame[quantity] / frame["batch"] if per_sample else frame[quantity]
    return float(values.median())


def _section(key: tuple, rows: pd.DataFrame) -> str:
    episodes = _per_episode(rows)
    methods = label_order(episodes)
    reference = next((m for m in methods if m.startswith(REFERENCE + "(")), None)
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
               ("before (ProtoNet) %", [f"{100 * episodes[m]['accuracy_before'].mean():.1f}" for m in methods]),
               (f"after % [{DEFAULT_CONFIDENCE:.0%} CI]", [_mean_ci(episodes[m]["accuracy_after"].to_numpy())
                                                          for m in methods])]
    if reference:
        columns.append((f"{escape(reference)} − method, points",
                        [DASH if m == reference else _difference(episodes[reference], episodes[m]) for m in methods]))
    saved = [_median(episodes[m], "measured_saved_bytes", True) for m in methods]
    flops = [_median(episodes[m], "counted_backward_flops", True) for m in methods]
    columns += [("saved KiB / sample", [DASH if v is None else f"{v / 1024:.1f}" for v in saved]),
                ("full ÷ saved", [times_full(v, full_saved) for v in saved]),
                ("backward MFLOP / sample", [DASH if v is None else f"{v / 1e6:.2f}" for v in flops]),
                ("full ÷ FLOP", [times_full(v, full_flops) for v in flops]),
                ("selection / fwd+bwd", [selection(episodes[m]) for m in methods])]
    target, model, data, resolution, episode, backbone = key
    title = (f"### {escape(target)} · {escape(model)} · {escape(data)} · {resolution} px · {escape(episode)} · "
             f"{escape(backbone)} backbone")
    return "\n\n".join([title, markdown_table(columns)])


def is_episodic(table: pd.DataFrame) -> pd.Series:
    """Rows of few-shot cells: only they carry an episode protocol (plans and compile enforce it;
    tables from journals older than the field have no such column)."""
    if "episode" not in table:
        return pd.Series(False, index=table.index)
    return table["episode"].fillna("") != ""


def fewshot_section(ok: pd.DataFrame) -> str:
    """``""`` unless the table has few-shot cells."""
    rows = ok[is_episodic(ok) & ok["quantity"].isin(QUANTITIES)]
    if rows.empty:
        return ""
    rows = rows.assign(backbone=rows["checkpoint"].fillna("pretrained"))
    intro = ("Few-shot episodes: each seed is one episode (its classes and images), the same for every method. "
             "Every method starts from the support set's ProtoNet prototypes (\"before\" is that head's query "
             "accuracy) and fine-tunes on the support set; \"after\" is the query accuracy, the mean over the "
             f"episodes with a {DEFAULT_CONFIDENCE:.0%} bootstrap CI over episodes. The difference to TinyTrain is "
             "paired: per episode, then averaged, its CI resampling the shared episodes. Saved bytes (measured, "
             "saved-tensor hooks) and counted backward FLOPs are per sample, medians over the episodes; the "
             "selection column is TinyTrain's selection time and a full forward+backward on the same support "
             "set (medians over episodes of each cell's medians, and the median of their per-cell ratio). Each "
             "backbone (pre-trained on the source classes, or meta-trained from it) has its own section.")
    sections = [_section(key, group) for key, group in rows.groupby(KEYS, sort=True)]
    return "\n\n".join(["## Few-shot episodes", intro] + sections)
