"""SSH to a board through OpenSSH itself (the ``ssh`` client), not a Python SSH library.

Why OpenSSH: it is on every host and board already, it is the best-kept SSH implementation,
and users' keys, agents, ``known_hosts`` and ProxyJump setups work unchanged; a library would add
a dependency with its own host-key and crypto handling to keep current. The device protocol
streams over the ssh process's stdin/stdout like over a local pipe.

Safety: host keys are verified (``StrictHostKeyChecking=yes`` against the target's known-hosts
file) unless the target explicitly opts out for lab use; every remote command is built from an
argument list with ``shlex.quote``; connections time out and are retried with exponential
backoff; ``BatchMode`` never lets ssh wait for a password.
"""
import shlex
import subprocess
import time

SSH_FAILED = 255  # ssh's own exit status for connection and authentication failures
HOST_KEY_MARKERS = ("Host key verification failed", "REMOTE HOST IDENTIFICATION HAS CHANGED",
                    "No ED25519 host key is known", "host key for")


class SshError(RuntimeError):
    pass


class HostKeyError(SshError):
    pass


def remote_command(argv, cwd=None, env=None):
    """A shell command line from an argument list, every user value quoted."""
    parts = []
    if cwd:
        parts.append("cd %s &&" % shlex.quote(cwd))
    if env:
        parts.extend("%s=%s" % (k, shlex.quote(v)) for k, v in sorted(env.items()))
    parts.append(" ".join(shlex.quote(str(a)) for a in argv))
    return " ".join(parts)


class OpenSsh:
    def __init__(self, host, sleep=time.sleep):
        self.host = host
        self.sleep = sleep

    def argv(self, command):
        h = self.host
        opts = ["-o", "BatchMode=yes", "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
                "-o", "ConnectTimeout=%d" % max(1, round(h.connect_timeout_s)),
                "-o", "ServerAliveInterval=5", "-o", "ServerAliveCountMax=3"]
        if h.insecure_no_host_key_check:
            opts += ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null"]
        else:
            opts += ["-o", "StrictHostKeyChecking=yes", "-o", "UserKnownHostsFile=" + h.known_hosts]
        return ["ssh", "-p", str(h.port), "-i", h.identity_file, *opts, "%s@%s" % (h.user, h.host),
                "--", command]

    def _explain(self, stderr):
        h = self.host
        if any(marker in stderr for marker in HOST_KEY_MARKERS):
            raise HostKeyError(
                "host key of %s:%d is unknown or does not match %s; check the board's key and add "
                "it (ssh-keyscan -p %d %s >> %s), or set insecure_no_host_key_check = true in the "
                "targets file for lab use. ssh said: %s"
                % (h.host, h.port, h.known_hosts, h.port, h.host, h.known_hosts, stderr.strip()))
        return "ssh to %s failed: %s" % (h.address, stderr.strip() or "no message")

    def run(self, argv, input=None, timeout_s=60.0, cwd=None, env=None):
        """Run a remote command (retrying connection failures); returns CompletedProcess (bytes)."""
        command = remote_command(argv, cwd, env)
        delay = 0.5
        for attempt in range(self.host.connect_retries + 1):
            try:
                proc = subprocess.run(self.argv(command), input=input, capture_output=True,
                                      timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise SshError("remote command on %s timed out after %.0f s: %s"
                               % (self.host.address, timeout_s, command))
            if proc.returncode != SSH_FAILED:
                return proc
            message = self._explain(proc.stderr.decode(errors="replace"))
            if attempt < self.host.connect_retries:
                self.sleep(delay)
                delay *= 2
        raise SshError("%s (after %d attempts)" % (message, self.host.connect_retries + 1))

    def check(self, argv, **kw):
        """Run and require exit status 0; returns stdout as text."""
        proc = self.run(argv, **kw)
        if proc.returncode != 0:
            raise SshError("on %s, %s exited %d: %s" % (self.host.address, argv[0], proc.returncode,
                                                        proc.stderr.decode(errors="replace").strip()))
        return proc.stdout.decode(errors="replace")

    def popen(self, argv, cwd=None, env=None):
        """A streaming remote process (text pipes), for the device protocol."""
        return subprocess.Popen(self.argv(remote_command(argv, cwd, env)), stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                start_new_session=True)
