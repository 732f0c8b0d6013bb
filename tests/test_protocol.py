"""The device protocol and the host session, against a scripted device speaking the protocol."""
import json

import pytest

from harness import protocol
from harness.session import Session
from harness.target import Failure, TargetError


class ScriptedDevice:
    """A transport whose device answers each host message from a script of replies."""

    def __init__(self, replies):
        self.replies = list(replies)
        self.sent = []
        self.pending = []

    def send(self, line):
        msg = json.loads(line)
        self.sent.append(msg)
        if msg["type"] != "bye" and self.replies:
            self.pending.extend(self.replies.pop(0))

    def receive(self, timeout_s):
        if not self.pending:
            raise TimeoutError
        line = self.pending.pop(0)
        return line if line is None else (line if isinstance(line, str) else protocol.encode(line))


HELLO = {"type": "hello", "protocol": 1, "clock": {"unit": "ticks", "hz": 1000}}


def test_a_run_collects_steps_and_regions_in_ns():
    device = ScriptedDevice([
        [HELLO], [{"type": "loaded"}],
        [{"type": "region", "event": "start", "name": "timed", "t": 5},
         {"type": "step", "i": 0, "phase": "timed", "t": [5, 7, 10, 11]},
         {"type": "region", "event": "stop", "name": "timed", "t": 11},
         {"type": "result", "memory": {}}]])
    run = Session(device, 10).execute({"plan": 1})
    assert run.steps[0]["t"] == [5_000_000, 7_000_000, 10_000_000, 11_000_000]
    assert [r["t"] for r in run.regions] == [5_000_000, 11_000_000]
    assert [m["type"] for m in device.sent] == ["hello", "load", "run", "bye"]


@pytest.mark.parametrize("replies,failure,text", [
    ([[HELLO], [{"type": "error", "where": "load", "message": "no such model"}]],
     Failure.DEVICE_ERROR, "during load: no such model"),
    ([[HELLO], [None]], Failure.CRASH, "closed the stream"),
    ([[HELLO], []], Failure.TIMEOUT, "timeout"),
    ([[HELLO], ["garbage{"]], Failure.PROTOCOL, "not a JSON protocol message"),
    ([[HELLO], [{"type": "step", "i": 0}]], Failure.PROTOCOL, "lacks phase, t"),
    ([[HELLO], [{"type": "step", "i": 0, "phase": "cooldown", "t": [1, 2, 3, 4]}]], Failure.PROTOCOL,
     "phase 'cooldown'"),
    ([[dict(HELLO, protocol=9)]], Failure.PROTOCOL, "protocol 9"),
    ([[dict(HELLO, clock={"unit": "ticks", "hz": 0})]], Failure.PROTOCOL, "neither ns nor ticks"),
])
def test_every_device_failure_becomes_a_clear_target_error(replies, failure, text):
    with pytest.raises(TargetError, match=text) as err:
        Session(ScriptedDevice(replies), 10).execute({})
    assert err.value.failure is failure


def test_decode_names_unknown_types():
    with pytest.raises(protocol.ProtocolError, match="unknown message type"):
        protocol.decode('{"type": "dance"}')
