"""Calibration: a separate, bounded phase before the timed steps, whose decisions are recorded
(pyperf's and torch.utils.benchmark's habit). Device side; no torch.

Warm-up: at least the job's ``warmup`` steps and two windows of ``WINDOW`` steps, then more until
the median step of the last window is within ``TOLERANCE`` of the window before it — or a bound
is hit (``EXTRA_WARMUP_STEPS`` more steps, or ``MAX_WARMUP_NS`` of warm-up).

Sample count: the job's ``steps`` is the minimum. Where extra steps change nothing but the number
of samples (cost cells on synthetic data), the timed steps are extended to last at least
``MIN_TIMED_NS`` — at most ``MAX_TIMED_FACTOR`` times the job's steps. A real-data cell's steps
are its training schedule and are never changed.
"""
import time

WINDOW = 3
TOLERANCE = 0.05
EXTRA_WARMUP_STEPS = 30
MAX_WARMUP_NS = 60 * 10 ** 9
MIN_TIMED_NS = 10 ** 9
MAX_TIMED_FACTOR = 10
RESOLUTION_FACTOR = 1000
"""A sample should be at least this many times the timer's resolution."""


def _median(xs):
    xs = sorted(xs)
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2.0


def stable(durations, window=WINDOW, tolerance=TOLERANCE):
    """Whether the last window's median is within ``tolerance`` of the previous window's."""
    if len(durations) < 2 * window:
        return False
    last, before = _median(durations[-window:]), _median(durations[-2 * window:-window])
    return abs(last - before) <= tolerance * before


def warm_up(step, warmup_min, clock):
    """Run ``step()`` (returns its duration in ns) until stable or bounded; the decisions."""
    durations = []
    least = max(warmup_min, 2 * WINDOW)
    most = least + EXTRA_WARMUP_STEPS
    start = clock()
    while True:
        if len(durations) >= least and stable(durations):
            stop = "stable"
            break
        if len(durations) >= most:
            stop = "max-steps"
            break
        if durations and clock() - start >= MAX_WARMUP_NS:
            stop = "max-time"
            break
        durations.append(step(len(durations)))
    return {"warmup_min": warmup_min, "warmup_max": most, "warmup_steps": len(durations),
            "warmup_stop": stop, "window": WINDOW, "tolerance": TOLERANCE,
            "estimate_step_ns": int(_median(durations[-WINDOW:]))}


def timer_resolution_ns():
    return max(1, int(round(time.get_clock_info("perf_counter").resolution * 1e9)))


def timed_steps(planned, estimate_ns, extendable):
    """``(steps, reason)``: the job's steps, or more to reach ``MIN_TIMED_NS`` where allowed."""
    if not extendable or estimate_ns <= 0 or planned * estimate_ns >= MIN_TIMED_NS:
        return planned, "plan"
    needed = -(-MIN_TIMED_NS // estimate_ns)
    return min(planned * MAX_TIMED_FACTOR, int(needed)), "min-time"


def decide(step, warmup_min, planned_steps, extendable, clock):
    """The whole calibration record: warm-up decisions, the timer check and the timed step count."""
    record = warm_up(step, warmup_min, clock)
    resolution = timer_resolution_ns()
    steps, reason = timed_steps(planned_steps, record["estimate_step_ns"], extendable)
    record.update({"timer_resolution_ns": resolution,
                   "resolution_ok": record["estimate_step_ns"] >= RESOLUTION_FACTOR * resolution,
                   "timed_steps": steps, "timed_reason": reason, "min_timed_ns": MIN_TIMED_NS})
    return record
