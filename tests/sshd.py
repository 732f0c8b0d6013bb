"""A real OpenSSH server on 127.0.0.1 with throw-away host and user keys, for the SSH targets.

Board tools that do not exist here are stand-ins in ``tests/data/standins`` (replaying recorded
outputs), put first on the remote PATH through the authorized key's ``environment=`` option.
"""
import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

STANDINS = Path(__file__).resolve().parent / "data" / "standins"
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def require_sshd():
    """Skip the calling test where sshd is not installed; fail it in CI, which installs it."""
    import pytest

    if not os.path.exists(SSHD):
        if os.environ.get("CI"):
            pytest.fail("sshd is not installed; .ci/run installs openssh-server")
        pytest.skip("sshd is not installed (apt-get install --no-install-recommends openssh-server)")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _keygen(path):
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)


def _children(pid):
    """Every descendant of ``pid`` (from /proc)."""
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


class Sshd:
    def __init__(self, root: Path):
        self.root = root
        self.port = free_port()
        self.user = getpass.getuser()
        self.host_key, self.user_key = root / "host_key", root / "user_key"
        _keygen(self.host_key)
        _keygen(self.user_key)
        path = "%s:%s" % (STANDINS, os.environ.get("PATH", "/usr/bin:/bin"))
        self.throttle_queue = root / "vcgencmd_throttled"
        (root / "authorized_keys").write_text('environment="PATH=%s",environment="VCGENCMD_STATE=%s" %s' % (
            path, self.throttle_queue, (root / "user_key.pub").read_text()))
        self.known_hosts = root / "known_hosts"
        self.known_hosts.write_text("[127.0.0.1]:%d %s\n" % (
            self.port, " ".join((root / "host_key.pub").read_text().split()[:2])))
        self.config = root / "sshd_config"
        self.config.write_text("\n".join([
            "Port %d" % self.port, "ListenAddress 127.0.0.1", "HostKey %s" % self.host_key,
            "AuthorizedKeysFile %s" % (root / "authorized_keys"), "PidFile %s" % (root / "sshd.pid"),
            "PasswordAuthentication no", "KbdInteractiveAuthentication no", "PubkeyAuthentication yes",
            "PermitRootLogin prohibit-password", "PermitUserEnvironment PATH,VCGENCMD_STATE", "StrictModes no",
            "UsePAM no", "MaxStartups 50", "MaxSessions 50", ""]))
        self.proc = None

    def start(self):
        os.makedirs("/run/sshd", exist_ok=True)  # OpenSSH's privilege-separation directory
        self.proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(self.config)],
                                     stderr=open(self.root / "sshd.log", "ab"))
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError("sshd did not start: %s" % (self.root / "sshd.log").read_text()[-2000:])

    def stop(self):
        """Stop the server and cut every session it holds (as a board that went away would)."""
        if self.proc and self.proc.poll() is None:
            sessions = _children(self.proc.pid)
            self.proc.kill()
            self.proc.wait()
            for pid in sessions:
                try:
                    if Path("/proc/%d/comm" % pid).read_text().strip().startswith("sshd"):
                        os.kill(pid, signal.SIGKILL)
                except OSError:
                    pass

    def targets_file(self, path, name="board", kind="raspberry-pi", **extra):
        """A targets file describing this server as a ``kind`` board."""
        values = dict(kind=kind, host="127.0.0.1", port=self.port, user=self.user,
                      identity_file=str(self.user_key), known_hosts=str(self.known_hosts),
                      workdir=str(self.root / ("work-" + name)), python=os.environ.get(
                          "ODT_TEST_REMOTE_PYTHON", __import__("sys").executable),
                      connect_timeout_s=5, connect_retries=1)
        values.update(extra)
        lines = ["[targets.%s]" % name] + ["%s = %s" % (k, _toml(v)) for k, v in values.items()]
        Path(path).write_text("\n".join(lines) + "\n")
        return Path(path)


def _toml(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return str(value)
    return '"%s"' % str(value).replace("\\", "\\\\").replace('"', '\\"')
