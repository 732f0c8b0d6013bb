"""The on-device agent: ``python -m harness.agent --artifacts DIR`` speaks the device protocol.

The version floor (``harness/floor.py``) is checked at hello: an older stack gets an error naming
what is missing instead of a crash later. Torch is imported only after that check.

Protocol messages go to the original stdout; anything else that writes to stdout (libraries,
prints) is redirected to stderr so it can never corrupt the stream. One plan per process.
"""
import argparse
import os
import signal
import sys
import threading
import time
import traceback

from . import __version__, device_info, floor, protocol


class Agent:
    def __init__(self, out, artifacts_dir, clock=time.perf_counter_ns):
        self.out = out
        self.artifacts_dir = artifacts_dir
        self.clock = clock
        self.execution = None

    def emit(self, msg):
        self.out.write(protocol.encode(msg))
        self.out.flush()

    def handle(self, msg):
        """Answer one host message; returns False when the session is over."""
        kind = msg["type"]
        if kind == "hello":
            if msg["protocol"] != protocol.VERSION:
                raise ValueError("host speaks protocol %r, this agent speaks %d"
                                 % (msg["protocol"], protocol.VERSION))
            problems = floor.problems()
            if problems:
                raise RuntimeError("the device stack is below the floor: " + "; ".join(problems))
            self.emit({"type": "hello", "protocol": protocol.VERSION,
                       "agent": "odt-bench-agent/" + __version__, "clock": {"unit": "ns"},
                       "pid": os.getpgid(0)})
        elif kind == "clock":
            self.emit({"type": "clock", "t": self.clock(), "monotonic_ns": time.monotonic_ns()})
        elif kind == "describe":
            description = device_info.describe()
            description["code_dir"] = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
            self.emit({"type": "describe", "device": description})
        elif kind == "load":
            from .executor import Execution

            self.execution = Execution(msg["plan"], self.artifacts_dir, self.clock)
            self.emit({"type": "loaded"})
        elif kind == "run":
            if self.execution is None:
                raise ValueError("'run' before a successful 'load'")
            self.emit(self.execution.run(self.emit))
        elif kind == "bye":
            return False
        else:
            raise ValueError("the agent does not accept %r messages" % kind)
        return True

    def serve(self, lines):
        for line in lines:
            if not line.strip():
                continue
            where = "protocol"
            try:
                msg = protocol.decode(line)
                where = msg["type"]
                if not self.handle(msg):
                    return 0
            except Exception as exc:  # reported to the host, which decides; the agent stops
                self.emit({"type": "error", "where": where, "message": "%s: %s" % (type(exc).__name__, exc),
                           "traceback": traceback.format_exc()})
                return 1
        return 0


def watch_parent(interval_s=0.5):
    """End this process group when the parent dies (e.g. the SSH session that started us is gone),
    so a lost connection never leaves training running on the board."""
    parent = os.getppid()

    def watch():
        while os.getppid() == parent:
            time.sleep(interval_s)
        os.killpg(os.getpgid(0), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m harness.agent", description=__doc__)
    parser.add_argument("--artifacts", default=".", help="directory of artifacts named by sha256")
    parser.add_argument("--own-session", action="store_true",
                        help="start a new session (process group) and end it if the parent dies")
    args = parser.parse_args(argv)
    if args.own_session:
        if os.getpid() != os.getsid(0):
            os.setsid()
        watch_parent()
    out = os.fdopen(os.dup(sys.stdout.fileno()), "w")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
    sys.stdout = sys.stderr
    return Agent(out, args.artifacts).serve(sys.stdin)


if __name__ == "__main__":
    sys.exit(main())
