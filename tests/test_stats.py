"""Tests for harness.stats: quartiles and the bootstrap confidence intervals of medians and ratios."""
import re

import numpy as np
import pytest

from harness import stats
from harness.stats import Interval, UndefinedRatio, median_ci, paired_ratio_ci, ratio_ci, summary


def test_summary_quartiles_interpolate_linearly_like_numpy():
    samples = [7, 1, 3, 10, 4]
    s = summary(samples)
    assert (s["n"], s["median"]) == (5, 4)
    assert (s["q1"], s["q3"]) == tuple(np.quantile(samples, [0.25, 0.75]))
    assert s["iqr"] == s["q3"] - s["q1"]


def test_constant_samples_give_a_zero_width_interval_at_the_value():
    assert median_ci([7] * 9) == Interval(7.0, 7.0, 7.0, 0.95, 10_000, (9,))
    assert ratio_ci([3] * 4, [6] * 5, resamples=500) == Interval(0.5, 0.5, 0.5, 0.95, 500, (4, 5))
    ci = paired_ratio_ci([2, 4, 6], [1, 2, 3], confidence=0.9)
    assert (ci.estimate, ci.low, ci.high, ci.confidence, ci.sizes) == (2.0, 2.0, 2.0, 0.9, (3,))


def test_estimates_are_the_medians_and_the_interval_contains_them():
    rng = np.random.default_rng(1)
    a, b = rng.lognormal(1.0, 0.3, 31), rng.lognormal(0.0, 0.3, 40)
    for ci, estimate in ((median_ci(a), np.median(a)),
                         (ratio_ci(a, b), np.median(a) / np.median(b)),
                         (paired_ratio_ci(a, b[:31]), np.median(a / b[:31]))):
        assert ci.estimate == estimate
        assert ci.low < ci.estimate < ci.high


def _coverage(interval, truth, draw, trials=200):
    """The share of ``trials`` synthetic data sets whose 95 % interval covers ``truth``."""
    rng = np.random.default_rng(2024)
    covered = 0
    for _ in range(trials):
        ci = interval(*draw(rng), resamples=1000, seed=int(rng.integers(2**32)))
        covered += ci.low <= truth <= ci.high
    return covered / trials


@pytest.mark.parametrize("name", ["median", "ratio", "paired"])
def test_95_percent_intervals_cover_the_true_value_about_95_percent_of_the_time(name):
    # lognormal samples: the true median of 2·exp(N(0, s)) is 2, of their ratio to exp(N(0, s)) also 2
    cases = {
        "median": (median_ci, 2.0, lambda rng: (2 * rng.lognormal(0, 0.3, 41),)),
        "ratio": (ratio_ci, 2.0, lambda rng: (2 * rng.lognormal(0, 0.3, 41), rng.lognormal(0, 0.3, 35))),
        "paired": (paired_ratio_ci, 1.5, lambda rng: _pairs(rng, 41, ratio=1.5, drift=3.0)),
    }
    interval, truth, draw = cases[name]
    assert 0.90 <= _coverage(interval, truth, draw) <= 0.99


def _pairs(rng, n, ratio, drift, noise=0.05):
    """Pairs (a, b) with a/b = ``ratio`` times noise, both members scaled by a drift from 1 to ``drift``."""
    common = np.linspace(1.0, drift, n) * rng.lognormal(0, noise, n)
    return ratio * common * rng.lognormal(0, noise, n), common * rng.lognormal(0, noise, n)


def test_paired_interval_is_narrower_than_unpaired_when_pairs_share_a_drift():
    a, b = _pairs(np.random.default_rng(5), 40, ratio=1.2, drift=2.0)
    paired, unpaired = paired_ratio_ci(a, b), ratio_ci(a, b)
    assert paired.low <= 1.2 <= paired.high and unpaired.low <= 1.2 <= unpaired.high
    assert paired.high - paired.low < (unpaired.high - unpaired.low) / 4


def test_same_seed_gives_the_same_interval_and_another_seed_another():
    rng = np.random.default_rng(3)
    a, b = rng.lognormal(0, 0.5, 24).tolist(), rng.lognormal(0, 0.5, 24).tolist()
    for interval in (ratio_ci, paired_ratio_ci):
        assert interval(a, b, seed=11) == interval(a, b, seed=11)
        assert interval(a, b, resamples=200, seed=11) != interval(a, b, resamples=200, seed=12)


def test_long_samples_are_resampled_in_blocks_without_changing_the_interval(monkeypatch):
    samples = np.random.default_rng(4).integers(1_000, 2_000, 37)
    whole = median_ci(samples, resamples=101)
    monkeypatch.setattr(stats, "BLOCK_ELEMENTS", 3 * 37)  # blocks of 3 resamples, the last of 2
    assert median_ci(samples, resamples=101) == whole


def test_integer_nanosecond_samples_are_accepted():
    ci = ratio_ci([1_000_000_007, 1_000_000_009], [2_000_000_014, 2_000_000_018])
    assert ci.estimate == pytest.approx(0.5)


@pytest.mark.parametrize("call,error,message", [
    (lambda: median_ci([]), ValueError, "samples: expected a non-empty sequence"),
    (lambda: ratio_ci([1, 2], []), ValueError, "b: expected a non-empty sequence"),
    (lambda: median_ci([1.0, float("nan")]), ValueError, "finite"),
    (lambda: paired_ratio_ci([1, 2, 3], [1, 2]), ValueError, "3 in a, 2 in b"),
    (lambda: ratio_ci([1, 2], [0, 0, 1]), UndefinedRatio, "median of b"),
    (lambda: ratio_ci([1, 2], [0, 0, 5, 5]), UndefinedRatio, "bootstrap resample"),
    (lambda: paired_ratio_ci([1, 2, 3], [1, 0, 3]), UndefinedRatio, "b[1] is 0"),
    (lambda: median_ci([1, 2], confidence=1.0), ValueError, "confidence"),
    (lambda: median_ci([1, 2], resamples=0), ValueError, "resamples"),
])
def test_bad_input_is_refused_with_a_clear_error(call, error, message):
    with pytest.raises(error, match=re.escape(message)):
        call()
