"""The local CPU target: every job runs in a fresh ``python -m harness.agent`` subprocess.

The child gets its own process group; on a timeout, a crash or any failure the whole group is
killed, so no training is left running. Its stderr is kept (the last 8 KiB) for error messages.
"""
import os
import signal
import subprocess
import sys
from pathlib import Path

from harness.cache import ArtifactCache
from harness.target import DeviceRun

from . import doctor
from .pipe import converse


class LocalTarget:
    """This machine: a fresh agent process per job; no power meter."""

    name = "local"
    needs_description = False

    @classmethod
    def from_config(cls, name, cache, targets_file):
        return cls(cache=cache)

    def __init__(self, python=None, cache=None, describe_timeout_s=120.0):
        self.python = python or sys.executable
        self.cache = cache or ArtifactCache()
        self.describe_timeout_s = describe_timeout_s
        self._description = None

    def _conversation(self, timeout_s, talk):
        proc = subprocess.Popen(
            [self.python, "-m", "harness.agent", "--artifacts", str(self.cache.objects)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, start_new_session=True, env=dict(os.environ, PYTHONUNBUFFERED="1"))
        return converse(proc, timeout_s, talk, lambda session: kill_group(proc))

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

    def doctor(self):
        """Readiness checks of this machine (see targets/doctor.py)."""
        root = Path(__file__).resolve().parent.parent
        proc = subprocess.run(["sh", "-c", doctor.SCRIPT, "sh", self.python, str(root),
                               str(self.cache.root)], capture_output=True, text=True, timeout=120)
        return doctor.checks(proc.stdout, {}, "pip install torch==2.13.0 (README)")

    def close(self):
        self._description = None


def kill_group(proc):
    """Kill a child started with ``start_new_session`` and its whole process group."""
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait()
