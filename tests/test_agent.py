"""The device-side agent, driven in process with protocol lines (as a host would send them)."""
import io
import json

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
    assert [k[0] for k in kinds[start + 1:stop]] == ["step"] * 3
    assert replies[-1]["type"] == "result"


def test_energy_mode_keeps_the_timed_window_free_of_io():
    status, replies = _session(plan_for(method="last-layer", resolution=32, steps=3, warmup=1,
                                        mode="energy"))
    kinds = [(m["type"], m.get("event"), m.get("name")) for m in replies]
    start, stop = kinds.index(("region", "start", "timed")), kinds.index(("region", "stop", "timed"))
    assert stop == start + 1
    assert sum(1 for m in replies if m["type"] == "step" and m["phase"] == "timed") == 3


def test_protocol_misuse_is_answered_with_an_error():
    status, replies = _serve({"type": "hello", "protocol": 1}, {"type": "run"})
    assert status == 1
    assert replies[-1]["type"] == "error" and "'run' before a successful 'load'" in replies[-1]["message"]
    status, replies = _serve({"type": "hello", "protocol": 2})
    assert replies[-1]["where"] == "hello" and "protocol 2" in replies[-1]["message"]
