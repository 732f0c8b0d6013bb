"""Pure statistics over raw samples: median, quartiles, IQR (linear interpolation, as numpy)."""
from typing import Sequence


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
