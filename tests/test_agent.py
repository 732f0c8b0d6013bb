"""The device-side agent, driven in process with protocol lines (as a host would send them)."""
import io
import json

import pytest

from harness import protocol
from harness.agent import Agent
from harness.cache import ArtifactCache
from tests.helpers import plan_for


def _serve(*messages):
    out = io.StringIO()
    status = Agent(out, str(ArtifactCache().objects)).serve(protocol.encode(m) for m in messages)
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


def _session(plan):
    return _serve({"type": "hello", "protocol": 1}, {"type": "load", "plan": plan}, {"type": "run"},
                  {"type": "bye"})


def test_performance_mode_streams_each_step_inside_the_timed_region():
    status, replies = _session(plan_for(method="last-layer", resolution=32, steps=3, warmup=1))
    assert status == 0
    kinds = [(m["type"], m.get("event"), m.get("name")) for m in replies]
    start, stop = kinds.index(("region", "start", "timed")), kinds.index(("region", "stop", "timed"))
    result = replies[-1]
    assert result["type"] == "result"
    timed = result["calibration"]["timed_steps"]
    assert timed >= 3  # the job's steps are the minimum; calibration may add samples
    assert [k[0] for k in kinds[start + 1:stop]] == ["step"] * timed
    warmup = [m for m in replies if m["type"] == "step" and m["phase"] == "warmup"]
    assert len(warmup) == result["calibration"]["warmup_steps"] >= 1


def test_energy_mode_keeps_the_timed_window_free_of_io():
    status, replies = _session(plan_for(method="last-layer", resolution=32, steps=3, warmup=1,
                                        mode="energy"))
    kinds = [(m["type"], m.get("event"), m.get("name")) for m in replies]
    start, stop = kinds.index(("region", "start", "timed")), kinds.index(("region", "stop", "timed"))
    assert stop == start + 1
    timed = replies[-1]["calibration"]["timed_steps"]
    assert sum(1 for m in replies if m["type"] == "step" and m["phase"] == "timed") == timed


def test_overhead_mode_interleaves_instrumented_and_bare_steps():
    status, replies = _session(plan_for(method="last-layer", resolution=32, steps=4, warmup=1,
                                        mode="overhead"))
    result = replies[-1]
    overhead = result["overhead"]
    assert status == 0 and overhead["order"] == "ABBA"
    arms = [overhead[k] for k in ("reported_ns", "instrumented_ns", "bare_ns")]
    assert [len(arm) for arm in arms] == [4, 4, 4]  # pairs = steps, never extended
    assert all(t > 0 for arm in arms for t in arm)
    # the instrumented arm is an ordinary step: its message is sent inside the timed region, and
    # the time it reports is its stamps' span, inside its time from outside
    steps = [m for m in replies if m["type"] == "step" and m["phase"] == "timed"]
    assert [m["t"][3] - m["t"][0] for m in steps] == overhead["reported_ns"]
    assert all(r < t for r, t in zip(overhead["reported_ns"], overhead["instrumented_ns"]))


@pytest.mark.parametrize("lr_schedule", ["constant", "cosine"])
def test_calibration_never_trains_so_accuracy_depends_only_on_the_plan_steps(lr_schedule):
    def after(warmup):
        _, replies = _session(plan_for(method="last-layer", data="mnist5k-transfer", resolution=32,
                                       batch=8, steps=4, warmup=warmup, lr=0.5, lr_schedule=lr_schedule))
        result = replies[-1]
        assert result["calibration"]["timed_steps"] == 4  # real data: the training schedule is kept
        return result["calibration"]["warmup_steps"], result["accuracy"]["after"]

    short, long_ = after(0), after(12)
    assert long_[0] >= 12  # the minimum is kept; a loaded machine may warm up longer, either run
    assert short[1] == long_[1]


def test_protocol_misuse_is_answered_with_an_error():
    status, replies = _serve({"type": "hello", "protocol": 1}, {"type": "run"})
    assert status == 1
    assert replies[-1]["type"] == "error" and "'run' before a successful 'load'" in replies[-1]["message"]
    status, replies = _serve({"type": "hello", "protocol": 2})
    assert replies[-1]["where"] == "hello" and "protocol 2" in replies[-1]["message"]
