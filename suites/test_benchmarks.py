"""One benchmark per plan cell; see ``suites/conftest.py``. The device's step times reach
pytest-benchmark through ``ReplayClock``: the benchmarked callable does no work, it only advances
the clock by the next device-measured duration (DESIGN.md, "Device timings inside pytest-benchmark").
"""
import pytest

from harness import export
from harness.job import Job


class ReplayClock:
    """A clock (seconds) that moves only when ``step()`` replays the next step time in ns."""

    def __init__(self):
        self.now = 0.0
        self.pending = []

    def __call__(self):
        return self.now

    def load(self, step_ns):
        self.pending = list(step_ns)

    def step(self):
        self.now += self.pending.pop(0) / 1e9


CLOCK = ReplayClock()


@pytest.mark.benchmark(timer=CLOCK, disable_gc=False, warmup=False)
def test_cell(cell: Job, odt_runner, benchmark):
    record = odt_runner.run_one(cell)
    if record["status"] != "ok":
        error = record["error"]
        pytest.fail("%s: %s" % (error["failure"], error["message"]), pytrace=False)
    steps = record["measurement"]["samples"]["step_ns"]
    benchmark.group = export.group(cell)
    benchmark.extra_info.update(export.extra_info(record, cell, odt_runner.names[cell.cell_id],
                                                  odt_runner.device, record["attempt"]))
    CLOCK.load(steps)
    benchmark.pedantic(CLOCK.step, rounds=len(steps), iterations=1, warmup_rounds=0)
    assert not CLOCK.pending
