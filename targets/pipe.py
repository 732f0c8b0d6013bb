"""A device conversation over a child process's pipes: used for a local agent and for ssh.

``converse`` runs one protocol session with a deadline; on any failure it calls ``abort`` (which
must leave nothing running, locally or remotely) and adds the child's stderr to the error.
"""
import collections
import queue
import subprocess
import threading

from harness.session import Session
from harness.target import TargetError

STDERR_TAIL = 8192
CLOSED_GRACE_S = 2.0
"""How long a child that closed its output gets to finish its stderr and exit before it is killed."""


class PipeTransport:
    """Lines to a child's stdin, lines from its stdout through a reader thread."""

    def __init__(self, proc):
        self.proc = proc
        self.lines = queue.Queue()
        self.ended = False
        self.stderr = collections.deque(maxlen=STDERR_TAIL)
        self._stderr_reader = threading.Thread(target=self._read_stderr, daemon=True)
        threading.Thread(target=self._read_stdout, daemon=True).start()
        self._stderr_reader.start()

    def _read_stdout(self):
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.put(line)
        self.ended = True
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


def _wait(proc, timeout_s):
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        pass


def converse(proc, timeout_s, talk, abort, explain=None):
    """``talk(session)`` with the child ``proc``; ``abort(session)`` runs on failure and at the end.

    ``explain(message, stderr_tail, returncode)`` may turn the failure and what the child printed
    into a better message (``returncode`` is None when the child had to be killed)."""
    transport = PipeTransport(proc)
    session = Session(transport, timeout_s)
    try:
        result = talk(session)
        _wait(proc, 5)  # it answered everything; abort() below ends it if it lingers
        return result
    except TargetError as exc:
        if transport.ended:
            _wait(proc, CLOSED_GRACE_S)  # let a child that closed its output print why and exit
        returncode = proc.poll()
        abort(session)
        tail = transport.stderr_tail().strip()
        if explain:
            exc.args = (explain(str(exc), tail, returncode),)
        if tail and not exc.detail:
            exc.detail = "device stderr (last lines):\n" + tail
        raise
    finally:
        abort(session)
        for stream in (proc.stdin, proc.stdout, proc.stderr):
            try:
                stream.close()
            except OSError:
                pass  # unflushed input to a dead child
