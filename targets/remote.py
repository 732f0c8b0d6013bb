"""Targets reached over SSH: deploy the device-side bundle and artifacts, run the agent remotely.

Layout on the device, under the target's ``workdir``::

    code/<bundle id>/     the device-side files (harness/bundle.py), complete when .complete exists
    objects/<sha256>      artifacts (datasets, checkpoints), verified by the agent before use

Unchanged content is never re-sent: the bundle by its id, artifacts by their hash. Uploads land
in a temporary directory and are moved into place only when complete. The agent runs with the
device's own Python (``python`` in the targets file) in its own process group; an aborted job
(timeout, Ctrl-C, lost connection) kills that group, remotely, and the agent also ends itself
when its SSH session dies.
"""
import io
import logging
import tarfile

from harness.bundle import bundle_id, bundle_tar
from harness.cache import ArtifactCache
from harness.target import DeviceRun, Failure, TargetError

from harness.registry import UnknownName

from . import doctor
from .config import TargetConfigError, load_targets
from .local import kill_group
from .pipe import converse
from .ssh import OpenSsh, SshError

log = logging.getLogger("odt_bench.deploy")

# positional parameters, never interpolated: $1 target dir, $2 temp dir
UNPACK = 'mkdir -p "$2" && tar -xf - -C "$2" && {}'
INSTALL_CODE = UNPACK.format('touch "$2/.complete" && mkdir -p "$(dirname "$1")" && '
                             '{ mv "$2" "$1" 2>/dev/null || rm -rf "$2"; }')
INSTALL_OBJECTS = UNPACK.format('mkdir -p "$1" && mv "$2"/* "$1"/ && rmdir "$2"')
SSH_ERROR_STATUS = 255


def _tar(files):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for name, path in files:
            tar.add(str(path), arcname=name)
    return buf.getvalue()


class SshTarget:
    """Base of the SSH drivers; subclasses add board health and meters."""

    needs_description = True

    @classmethod
    def from_config(cls, name, cache, targets_file):
        try:
            return cls(load_targets(targets_file)[name], cache=cache)
        except TargetConfigError as exc:
            raise UnknownName(str(exc))

    def __init__(self, host, cache=None, ssh=None):
        self.host = host
        self.name = host.name
        self.cache = cache or ArtifactCache()
        self.ssh = ssh or OpenSsh(host)
        self._description = None
        self.sent = {"code": 0, "objects": 0}

    @property
    def code_dir(self):
        return "%s/code/%s" % (self.host.workdir, bundle_id())

    @property
    def objects_dir(self):
        return self.host.workdir + "/objects"

    def _sh(self, script, *args, input=None, timeout_s=120.0):
        try:
            return self.ssh.check(["sh", "-c", script, "sh", *args], input=input, timeout_s=timeout_s)
        except SshError as exc:
            raise TargetError(Failure.CRASH, str(exc))

    def deploy_code(self):
        if self._sh('test -f "$1/.complete" && echo yes || echo no', self.code_dir).strip() == "yes":
            return
        log.info("deploying the device-side code to %s:%s", self.name, self.code_dir)
        self._sh(INSTALL_CODE, self.code_dir, self.code_dir + ".incoming", input=bundle_tar())
        self.sent["code"] += 1

    def deploy_artifacts(self, shas):
        shas = sorted({s for s in shas if s})
        if not shas:
            return
        present = set(self._sh('mkdir -p "$1" && ls "$1"', self.objects_dir).split())
        missing = [s for s in shas if s not in present]
        if missing:
            log.info("sending %d artifact(s) to %s", len(missing), self.name)
            data = _tar([(s, self.cache.path(s)) for s in missing])
            self._sh(INSTALL_OBJECTS, self.objects_dir, "%s/.incoming.%s" % (self.host.workdir, missing[0][:12]),
                     input=data, timeout_s=600.0)
            self.sent["objects"] += len(missing)

    def _agent(self):
        return self.ssh.popen([self.host.python, "-m", "harness.agent", "--artifacts", self.objects_dir,
                               "--own-session"], cwd=self.code_dir, env={"PYTHONPATH": self.code_dir,
                                                                         "PYTHONUNBUFFERED": "1"})

    def _kill_remote(self, pgid):
        """Kill the agent's process group on the device (best effort: it may be gone already)."""
        if pgid:
            try:
                self.ssh.run(["kill", "-KILL", "--", "-%d" % pgid], timeout_s=30)
            except SshError as exc:
                log.warning("could not reach %s to kill process group %d: %s", self.name, pgid, exc)

    def _conversation(self, timeout_s, talk):
        self.deploy_code()
        proc = self._agent()

        def abort(session):
            alive = proc.poll() is None
            kill_group(proc)
            if alive:
                self._kill_remote(session.peer.get("pid"))

        return converse(proc, timeout_s, talk, abort, explain=self._explain)

    def _explain(self, message, stderr, returncode):
        """ssh exits 255 on its own errors (a remote command's status is passed through)."""
        if proc_lost(stderr) or returncode == SSH_ERROR_STATUS:
            said = ": " + stderr.strip()[-300:] if stderr else ""
            return "lost the SSH connection to %s (%s)%s" % (self.name, message, said)
        return message

    def open(self):
        def talk(session):
            session.hello()
            return session.describe()

        self._description = dict(self._conversation(120.0, talk), target_kind=self.host.kind)

    def describe(self):
        if self._description is None:
            self.open()
        return self._description

    tools = {}  # board tools the driver needs -> the command that installs them
    python_fix = "install Python >= 3.8 and torch >= 1.13 on the device (docs/devices.md)"

    def doctor(self):
        """Readiness checks of the device (see targets/doctor.py)."""
        self.deploy_code()
        proc = self.ssh.run(["sh", "-c", doctor.SCRIPT, "sh", self.host.python, self.code_dir,
                             self.host.workdir, *sorted(self.tools)], timeout_s=120)
        return doctor.checks(proc.stdout.decode(errors="replace"), self.tools, self.python_fix)

    def health(self):
        """Board health readings; the base has none."""
        return {}

    def judge(self, before, after):
        """Flags for a job from health before and after; the base has none."""
        return []

    def _health(self):
        try:
            return self.health()
        except SshError as exc:
            raise TargetError(Failure.CRASH, "reading the board's health: %s" % exc)

    def run(self, plan, timeout_s) -> DeviceRun:
        self.deploy_artifacts([plan.get("checkpoint"), plan["data"].get("artifact")])
        before = self._health()
        run = self._conversation(timeout_s, lambda session: self.execute(session, plan))
        try:
            after = self.health()
            flags = self.judge(before, after)
        except SshError as exc:
            after, flags = {}, ["health after the job unreadable: %s" % exc]
        run.health.update(before=before, after=after, flags=flags)
        if flags and self.host.strict:
            raise TargetError(Failure.UNHEALTHY, "job rejected (strict): %s" % "; ".join(flags))
        return run

    def execute(self, session, plan):
        return session.execute(plan)

    def close(self):
        self._description = None


def proc_lost(stderr):
    markers = ("Connection to", "closed by remote host", "Broken pipe", "Connection reset",
               "Connection refused", "timed out")
    return any(m in stderr for m in markers)
