"""One protocol conversation with a device over any line transport (pipe, SSH channel, UART).

A transport has ``send(line)`` and ``receive(timeout_s) -> line | None`` (None: the peer closed);
it raises ``TimeoutError`` when nothing arrives in time. The session enforces one deadline for the
whole job and turns every way a device can fail into a ``TargetError``.
"""
import time

from . import protocol
from .target import DeviceRun, Failure, TargetError


class Session:
    def __init__(self, transport, deadline_s: float, clock=time.monotonic):
        self.transport = transport
        self.clock = clock
        self.deadline = clock() + deadline_s
        self.deadline_s = deadline_s
        self.to_ns = int
        self.peer = {}  # the device's hello, once received

    def _send(self, msg):
        self.transport.send(protocol.encode(msg))

    def _receive(self, waiting_for):
        left = self.deadline - self.clock()
        try:
            if left <= 0:
                raise TimeoutError
            line = self.transport.receive(left)
        except TimeoutError:
            raise TargetError(Failure.TIMEOUT, "no %s from the device within the job's %.0f s timeout"
                              % (waiting_for, self.deadline_s))
        if line is None:
            raise TargetError(Failure.CRASH, "the device closed the stream while we waited for %s"
                              % waiting_for)
        try:
            msg = protocol.decode(line)
        except protocol.ProtocolError as exc:
            raise TargetError(Failure.PROTOCOL, str(exc))
        if msg["type"] == "error":
            raise TargetError(Failure.DEVICE_ERROR, "device error during %s: %s"
                              % (msg["where"], msg["message"]), msg.get("traceback", ""))
        return msg

    def _expect(self, kind):
        msg = self._receive("a %r message" % kind)
        if msg["type"] != kind:
            raise TargetError(Failure.PROTOCOL, "expected a %r message, got %r" % (kind, msg["type"]))
        return msg

    def hello(self):
        self._send({"type": "hello", "protocol": protocol.VERSION})
        hello = self._expect("hello")
        self.peer = hello
        if hello["protocol"] != protocol.VERSION:
            raise TargetError(Failure.PROTOCOL, "device speaks protocol %r, the host %d"
                              % (hello["protocol"], protocol.VERSION))
        try:
            self.to_ns = protocol.clock_to_ns(hello.get("clock", {}))
        except protocol.ProtocolError as exc:
            raise TargetError(Failure.PROTOCOL, str(exc))
        return hello

    def clock_sample(self):
        """``(host_send_ns, device_t_ns, host_recv_ns, device_monotonic_ns)`` from one ping."""
        sent = time.monotonic_ns()
        self._send({"type": "clock"})
        reply = self._expect("clock")
        return sent, self.to_ns(reply["t"]), time.monotonic_ns(), reply.get("monotonic_ns")

    def describe(self):
        self._send({"type": "describe"})
        return self._expect("describe")["device"]

    def execute(self, plan, before_run=None, after_run=None) -> DeviceRun:
        """hello -> load -> run, collecting the stream until the result.

        ``before_run(session)`` runs once the plan is loaded (start a meter, sample clocks);
        ``after_run(session, run)`` once the result is in (stop the meter)."""
        run = DeviceRun(hello=self.hello())
        self._send({"type": "load", "plan": plan})
        self._expect("loaded")
        if before_run:
            before_run(self)
        self._send({"type": "run"})
        while True:
            msg = self._receive("a message of the running job")
            if msg["type"] == "step":
                run.steps.append(dict(msg, t=[self.to_ns(t) for t in msg["t"]]))
            elif msg["type"] == "region":
                run.regions.append(dict(msg, t=self.to_ns(msg["t"])))
            elif msg["type"] == "result":
                run.result = msg
                break
            else:
                raise TargetError(Failure.PROTOCOL, "unexpected %r message during a run" % msg["type"])
        if after_run:
            after_run(self, run)
        self._send({"type": "bye"})
        return run
