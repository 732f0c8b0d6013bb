"""The report section on accuracy over a learning-rate grid and seeds: per method the mean
accuracy after training at each learning rate, its best rate, and the share of the gap between
``last-layer`` and its reference that the method closes at its best rate, with a bootstrap CI over
the seeds that all three share. The reference is ``full``, and for ``gradfilter`` (and
``gradfilter-compact``) with ``k = K`` exact backprop through the same layers, ``bp-last-k(k=K)`` (the comparison the GradFilter paper
makes)."""
from __future__ import annotations

import re

import numpy as np
import pandas as pd

from ..stats import DEFAULT_CONFIDENCE, Interval, joint_ci, mean_ci
from .tables import DASH, FULL, escape, label_order, markdown_table

LAST = "last-layer"
KEYS = ["target", "model", "data", "resolution", "batch", "mode"]


def _latest(rows: pd.DataFrame) -> pd.DataFrame:
    """One accuracy per (label, lr, seed): the latest record's."""
    return rows.sort_values(["run_id", "cell_id"]).drop_duplicates(["label", "lr", "seed"], keep="last")


def _grid(rows: pd.DataFrame) -> dict[str, dict[float, dict[int, float]]]:
    grid: dict[str, dict[float, dict[int, float]]] = {}
    for row in _latest(rows).itertuples(index=False):
        grid.setdefault(row.label, {}).setdefault(float(row.lr), {})[int(row.seed)] = float(row.value)
    return grid


def accuracy_rows(ok: pd.DataFrame) -> pd.DataFrame:
    """The recorded accuracies after training."""
    return ok[(ok["quantity"] == "accuracy_after") & ok["value"].notna()]


def has_grid(rows: pd.DataFrame) -> bool:
    """Whether some label of these accuracy rows ran at several learning rates or seeds."""
    return bool(rows[["label", "lr", "seed"]].drop_duplicates()["label"].duplicated().any())


def best_rate_means(rows: pd.DataFrame) -> dict[str, tuple[float, Interval]]:
    """Per label of one group's accuracy rows: its best rate and the mean accuracy over the seeds
    there, with a bootstrap CI over those seeds."""
    out = {}
    for label, by_lr in _grid(rows).items():
        lr = _best(by_lr)
        out[label] = lr, mean_ci(list(by_lr[lr].values()))
    return out


def _best(by_lr: dict[float, dict[int, float]]) -> float:
    return max(sorted(by_lr), key=lambda lr: np.mean(list(by_lr[lr].values())))


def _cell(by_seed: dict[int, float] | None) -> str:
    if not by_seed:
        return DASH
    values = list(by_seed.values())
    spread = f" [{100 * min(values):.1f}–{100 * max(values):.1f}]" if len(values) > 1 else ""
    return f"{100 * np.mean(values):.1f}{spread} (n={len(values)})"


def reference(label: str) -> str:
    """The label whose accuracy bounds ``label``'s gap: bp-last-k of the same k for gradfilter."""
    k = re.match(r"gradfilter(-compact)?\(.*\bk=(\d+)", label)
    return f"bp-last-k(k={k.group(2)})" if k else FULL


def _gap_closed(grid, label) -> str:
    """(acc − acc_last) / (acc_reference − acc_last) at each method's best rate, over shared seeds."""
    upper = reference(label)
    if label in (upper, LAST) or upper not in grid or LAST not in grid:
        return DASH
    at_best = [grid[name][_best(grid[name])] for name in (label, LAST, upper)]
    seeds = sorted(set.intersection(*(set(s) for s in at_best)))
    if not seeds:
        return DASH
    columns = [[by_seed[s] for s in seeds] for by_seed in at_best]

    def closed(method, last, full):
        with np.errstate(divide="ignore", invalid="ignore"):
            return (method.mean(1) - last.mean(1)) / (full.mean(1) - last.mean(1))

    ci = joint_ci(columns, closed)
    return f"{ci.estimate:.3f} [{ci.low:.3f}–{ci.high:.3f}] (n={len(seeds)})"


def _section(key: tuple, rows: pd.DataFrame) -> str:
    grid = _grid(rows)
    rates = sorted({lr for by_lr in grid.values() for lr in by_lr})
    labels = label_order(grid)
    columns = [("method", [escape(label) for label in labels])]
    columns += [(f"lr {lr:g}", [_cell(grid[label].get(lr)) for label in labels]) for lr in rates]
    columns.append(("best lr", [f"{_best(grid[label]):g}" for label in labels]))
    columns.append((f"gap closed at best lr [{DEFAULT_CONFIDENCE:.0%} CI]", [_gap_closed(grid, label) for label in labels]))
    target, model, data, resolution, batch, mode = key
    title = f"### {escape(target)} · {escape(model)} · {escape(data)} · {resolution} px · batch {batch}" + (
        "" if mode == "performance" else f" · {escape(mode)} mode")
    return "\n\n".join([title, markdown_table(columns)])


def accuracy_grid_section(ok: pd.DataFrame) -> str:
    """``""`` unless some group has accuracies at several learning rates or seeds."""
    sections = [_section(key, group) for key, group in accuracy_rows(ok).groupby(KEYS, sort=True)
                if has_grid(group)]
    if not sections:
        return ""
    intro = ("Accuracy after training on the held-out test images, in percent: the mean over seeds at each "
             "learning rate, [min–max] and the number of seeds. Each method's best rate is the one with the "
             f"highest mean. \"Gap closed\" is (accuracy − {LAST}) / (reference − {LAST}), each at its own best "
             f"rate, over the seeds all three ran; the reference is {FULL}, and for gradfilter(k=K) exact backprop "
             "through the same layers, bp-last-k(k=K). Its interval resamples those seeds (the same seeds for "
             "all three). The rates were chosen on the test images themselves, the same way for every method.")
    return "\n\n".join(["## Accuracy over the learning-rate grid", intro] + sections)
