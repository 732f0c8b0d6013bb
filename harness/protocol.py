"""The device protocol, version 1: JSON lines, one message per line, each with a ``type``.

    host -> device   {"type": "hello", "protocol": 1}
    device -> host   {"type": "hello", "protocol": 1, "agent": "...", "clock": {"unit": "ns"},
                      "pid": 4242}   (the agent's process group, for a remote kill)
                     (an MCU may report {"unit": "ticks", "hz": 216000000} instead)
    host -> device   {"type": "clock"}      (any time between other messages)
    device -> host   {"type": "clock", "t": 123, "monotonic_ns": 456}: its timer and CLOCK_MONOTONIC
    host -> device   {"type": "describe"}
    device -> host   {"type": "describe", "device": {...fingerprint, memory capacity...}}
    host -> device   {"type": "load", "plan": {...ExecutionPlan...}}
    device -> host   {"type": "loaded"}
    host -> device   {"type": "run"}
    device -> host   a stream of
                     {"type": "region", "event": "start" | "stop", "name": "timed", "t": 123}
                     {"type": "step", "i": 0, "phase": "warmup" | "timed", "t": [t0, t1, t2, t3]}
                     then {"type": "result", ...device-raw figures...}
    device -> host   {"type": "error", "where": "load" | "run" | ..., "message": "..."} at any point
    host -> device   {"type": "bye"}

Timestamps ``t`` are integers on the device's clock (ns, or ticks at ``hz``). A step's four stamps
bound its forward (model + loss), backward and update (optimizer step + zero grad). This module is
shared by the agent (device side) and the host; it needs only the standard library.
"""
import json

VERSION = 1
REQUIRED = {
    "hello": ("protocol",),
    "clock": (),
    "describe": (),
    "load": ("plan",),
    "loaded": (),
    "run": (),
    "region": ("event", "name", "t"),
    "step": ("i", "phase", "t"),
    "result": (),
    "error": ("where", "message"),
    "bye": (),
}
PHASES = ("warmup", "timed")


class ProtocolError(RuntimeError):
    """A peer sent something that is not a valid protocol message."""


def encode(msg):
    return json.dumps(msg, separators=(",", ":"), sort_keys=True) + "\n"


def decode(line):
    """Parse and check one line; raises ProtocolError naming what is wrong."""
    try:
        msg = json.loads(line)
    except ValueError:
        raise ProtocolError("not a JSON protocol message: %r" % (line[:200],))
    if not isinstance(msg, dict) or msg.get("type") not in REQUIRED:
        raise ProtocolError("unknown message type in %r; known: %s" % (line[:200], sorted(REQUIRED)))
    missing = [k for k in REQUIRED[msg["type"]] if k not in msg]
    if missing:
        raise ProtocolError("%s message lacks %s: %r" % (msg["type"], ", ".join(missing), line[:200]))
    if msg["type"] == "step" and msg["phase"] not in PHASES:
        raise ProtocolError("step phase %r is not one of %s" % (msg["phase"], PHASES))
    return msg


def clock_to_ns(clock):
    """A function converting device clock values to integer ns, from the hello's ``clock``."""
    if clock.get("unit") == "ns":
        return int
    if clock.get("unit") == "ticks" and clock.get("hz", 0) > 0:
        hz = int(clock["hz"])
        return lambda ticks: int(ticks) * 10 ** 9 // hz
    raise ProtocolError("device clock %r is neither ns nor ticks with a positive hz" % (clock,))
