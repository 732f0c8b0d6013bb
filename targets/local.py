"""The local CPU target: every job runs in a fresh ``python -m harness.agent`` subprocess.

The child gets its own process group; on a timeout, a crash or any failure the whole group is
killed, so no training is left running. Its stderr is kept (the last 8 KiB) for error messages.
"""
import collections
import os
import queue
import signal
import subprocess
import sys
import threading

from harness.cache import ArtifactCache
from harness.session import Session
from harness.target import DeviceRun, TargetError

STDERR_TAIL = 8192


class PipeTransport:
    """Lines to a child's stdin, lines from its stdout through a reader thread."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = queue.Queue()
        self.stderr = collections.deque(maxlen=STDERR_TAIL)
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_reader.start()

    def _read_stdout(self):
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.put(line)
        self.lines.put(None)

    def _read_stderr(self):
        for line in iter(self.proc.stderr.readline, ""):
            self.stderr.extend(line)

    def send(self, line):
        try:
            self.proc.stdin.write(line)
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError):
            pass  # the child is gone; receive() reports it

    def receive(self, timeout_s):
        try:
            return self.lines.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError

    def stderr_tail(self):
        """The child's last stderr output; call after it has ended."""
        self._stderr_reader.join(timeout=5)
        return "".join(self.stderr)


class LocalTarget:
    name = "local"

    def __init__(self, python=None, cache=None, describe_timeout_s=120.0):
        self.python = python or sys.executable
        self.cache = cache or ArtifactCache()
        self.describe_timeout_s = describe_timeout_s
        self._description = None

    def _spawn(self):
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        return subprocess.Popen(
            [self.python, "-m", "harness.agent", "--artifacts", str(self.cache.objects)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True, env=env)

    def _conversation(self, timeout_s, talk):
        proc = self._spawn()
        transport = PipeTransport(proc)
        try:
            result = talk(Session(transport, timeout_s))
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass  # it answered everything; the finally below ends it
            return result
        except TargetError as exc:
            _kill_group(proc)
            tail = transport.stderr_tail().strip()
            if tail and not exc.detail:
                exc.detail = "agent stderr (last lines):\n" + tail
            raise
        finally:
            _kill_group(proc)
            for stream in (proc.stdin, proc.stdout, proc.stderr):
                try:
                    stream.close()
                except OSError:
                    pass  # unflushed input to a dead child

    def open(self):
        def talk(session):
            session.hello()
            return session.describe()

        self._description = self._conversation(self.describe_timeout_s, talk)

    def describe(self):
        if self._description is None:
            self.open()
        return self._description

    def run(self, plan, timeout_s) -> DeviceRun:
        return self._conversation(timeout_s, lambda session: session.execute(plan))

    def close(self):
        self._description = None


def _kill_group(proc):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
