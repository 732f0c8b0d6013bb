"""Pure statistics over raw samples: median, quartiles, IQR (linear interpolation, as numpy), and
percentile-bootstrap confidence intervals of a median and of ratios between two cells.

The bootstrap draws from numpy's default generator seeded by ``seed``, so the same samples and seed
give the same interval, bit for bit (reports must render to the same bytes).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

DEFAULT_CONFIDENCE = 0.95
DEFAULT_RESAMPLES = 10_000
DEFAULT_SEED = 0
BLOCK_ELEMENTS = 1 << 22
"""Resampled values held in memory at once; longer samples are resampled in blocks of rows."""


def quantile(samples: Sequence[float], q: float) -> float:
    if not samples:
        raise ValueError("quantile of no samples")
    xs = sorted(samples)
    pos = (len(xs) - 1) * q
    lo = int(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def median(samples: Sequence[float]) -> float:
    return quantile(samples, 0.5)


def summary(samples: Sequence[float]) -> dict:
    """n, median, q1, q3 and iqr of ``samples``."""
    q1, q3 = quantile(samples, 0.25), quantile(samples, 0.75)
    return {"n": len(samples), "median": median(samples), "q1": q1, "q3": q3, "iqr": q3 - q1}


class UndefinedRatio(ValueError):
    """A ratio's denominator is 0: a median of the sample or of a bootstrap resample, or one pair's."""


@dataclass(frozen=True)
class Interval:
    """A point estimate and its percentile-bootstrap confidence interval ``[low, high]``.

    ``sizes`` holds the sample sizes: ``(n,)`` for one sample, ``(pairs,)`` for paired samples,
    ``(n_a, n_b)`` for two independent samples.
    """

    estimate: float
    low: float
    high: float
    confidence: float
    resamples: int
    sizes: tuple[int, ...]


def median_ci(samples: Sequence[float], confidence: float = DEFAULT_CONFIDENCE,
              resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Interval:
    """The median of ``samples`` with its bootstrap CI (samples resampled with replacement)."""
    return _bootstrap([_array(samples, "samples")], _identity, confidence, resamples, seed)


def ratio_ci(a: Sequence[float], b: Sequence[float], confidence: float = DEFAULT_CONFIDENCE,
             resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Interval:
    """median(a) / median(b) with its bootstrap CI, ``a`` and ``b`` independent samples (each
    resampled on its own). Raises ``UndefinedRatio`` when a median of ``b`` is 0."""
    return _bootstrap([_array(a, "a"), _array(b, "b")], _ratio, confidence, resamples, seed)


def paired_ratio_ci(a: Sequence[float], b: Sequence[float], confidence: float = DEFAULT_CONFIDENCE,
                    resamples: int = DEFAULT_RESAMPLES, seed: int = DEFAULT_SEED) -> Interval:
    """The median of the per-pair ratios ``a[i] / b[i]`` with its bootstrap CI, pairs resampled
    jointly (resampling the per-pair ratios is resampling the pairs).

    The statistic is the median of per-pair ratios, not the ratio of medians: each ratio is taken
    within a pair run back to back, so drift that both members of a pair share (clock, temperature,
    background load changing over the run) cancels before the median is taken, and one disturbed
    pair moves the median little. Raises ``UndefinedRatio`` when some ``b[i]`` is 0.
    """
    x, y = _array(a, "a"), _array(b, "b")
    if len(x) != len(y):
        raise ValueError("paired samples differ in length: %d in a, %d in b" % (len(x), len(y)))
    zeros = np.flatnonzero(y == 0)
    if len(zeros):
        raise UndefinedRatio("b[%d] is 0: the ratio of pair %d is undefined" % (zeros[0], zeros[0]))
    return _bootstrap([x / y], _identity, confidence, resamples, seed)


def joint_ci(columns: Sequence[Sequence[float]], statistic: Callable[..., np.ndarray],
             confidence: float = DEFAULT_CONFIDENCE, resamples: int = DEFAULT_RESAMPLES,
             seed: int = DEFAULT_SEED) -> Interval:
    """``statistic`` of equally long ``columns`` whose rows belong together (e.g. the accuracies of
    several methods on the same seeds), with a bootstrap CI that resamples whole rows. ``statistic``
    takes one 2-D array per column (resamples x rows) and returns one value per resample."""
    arrays = [_array(c, "column %d" % i) for i, c in enumerate(columns)]
    if len({len(a) for a in arrays}) != 1:
        raise ValueError("columns differ in length: %s" % [len(a) for a in arrays])
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie strictly between 0 and 1, got %r" % (confidence,))
    estimate = statistic(*(a[np.newaxis, :] for a in arrays))[0]
    rows = np.random.default_rng(seed).integers(0, len(arrays[0]), size=(resamples, len(arrays[0])))
    values = statistic(*(a[rows] for a in arrays))
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(values, [tail, 1 - tail])
    return Interval(float(estimate), float(low), float(high), confidence, resamples, (len(arrays[0]),))


def mean_ci(values: Sequence[float]) -> Interval:
    """The mean of ``values`` with its bootstrap CI (``joint_ci`` of one column)."""
    return joint_ci([values], lambda a: a.mean(1))


def _array(samples: Sequence[float], name: str) -> np.ndarray:
    x = np.asarray(samples, dtype=float)
    if x.ndim != 1 or len(x) == 0:
        raise ValueError("%s: expected a non-empty sequence of numbers, got %d values" % (name, x.size))
    if not np.isfinite(x).all():
        raise ValueError("%s: samples must be finite numbers" % name)
    return x


def _identity(medians: np.ndarray) -> np.ndarray:
    return medians


def _ratio(numerators: np.ndarray, denominators: np.ndarray) -> np.ndarray:
    if (denominators == 0).any():
        raise UndefinedRatio("the median of b, or of a bootstrap resample of b, is 0: the ratio is "
                             "undefined")
    return numerators / denominators


def _resampled_medians(x: np.ndarray, rows: int, rng: np.random.Generator) -> np.ndarray:
    """The medians of ``rows`` resamples of ``x`` with replacement, each as long as ``x``."""
    return np.median(x[rng.integers(0, len(x), size=(rows, len(x)))], axis=1)


def _bootstrap(samples: list[np.ndarray], statistic: Callable[..., np.ndarray], confidence: float,
               resamples: int, seed: int) -> Interval:
    """``statistic`` of the samples' medians, and its percentile interval over ``resamples``
    draws in which each sample is resampled with replacement independently of the others."""
    if not 0 < confidence < 1:
        raise ValueError("confidence must lie strictly between 0 and 1, got %r" % (confidence,))
    if not isinstance(resamples, int) or resamples < 1:
        raise ValueError("resamples must be a positive integer, got %r" % (resamples,))
    estimate = statistic(*(np.median(x, keepdims=True) for x in samples))[0]
    rng = np.random.default_rng(seed)
    rows = max(1, BLOCK_ELEMENTS // max(len(x) for x in samples))
    values = np.concatenate([
        statistic(*(_resampled_medians(x, min(rows, resamples - start), rng) for x in samples))
        for start in range(0, resamples, rows)
    ])
    tail = (1 - confidence) / 2
    low, high = np.quantile(values, [tail, 1 - tail])
    return Interval(float(estimate), float(low), float(high), confidence, resamples,
                    tuple(len(x) for x in samples))
