"""Target descriptions: a user's TOML file of named SSH targets, parsed once into frozen objects.

    # targets.toml (path: --targets FILE, or $ODT_BENCH_TARGETS, or ./targets.toml)
    [targets.pi4]
    kind = "raspberry-pi"            # raspberry-pi | jetson
    host = "192.168.1.20"
    port = 22                        # optional, default 22
    user = "pi"
    identity_file = "~/.ssh/id_ed25519"
    known_hosts = "~/.ssh/known_hosts"
    workdir = "/home/pi/odt-bench"   # absolute path on the device
    python = "/home/pi/odt/bin/python"
    connect_timeout_s = 10           # optional
    connect_retries = 3              # optional: retries of a failed connection, with backoff
    strict = false                   # optional: reject jobs during which the board throttled
    insecure_no_host_key_check = false   # optional, lab use only: skips host-key verification

Unknown keys, missing keys and wrong types are errors naming the file, the target and the key.
"""
import os
import tomllib
from dataclasses import MISSING, dataclass, fields
from pathlib import Path

KINDS = ("raspberry-pi", "jetson")


class TargetConfigError(ValueError):
    pass


@dataclass(frozen=True)
class SshHost:
    name: str
    kind: str
    host: str
    user: str
    identity_file: str
    known_hosts: str
    workdir: str
    python: str
    port: int = 22
    connect_timeout_s: float = 10.0
    connect_retries: int = 3
    strict: bool = False
    insecure_no_host_key_check: bool = False

    @property
    def address(self):
        return "%s@%s:%d" % (self.user, self.host, self.port)


_TYPES = {"port": int, "connect_timeout_s": (int, float), "connect_retries": int, "strict": bool,
          "insecure_no_host_key_check": bool}
_PATHS = ("identity_file", "known_hosts")


def _host(path, name, table):
    where = "%s [targets.%s]" % (path, name)
    known = {f.name for f in fields(SshHost)} - {"name"}
    unknown = sorted(set(table) - known)
    if unknown:
        raise TargetConfigError("%s: unknown key %r; allowed: %s" % (where, unknown[0], ", ".join(sorted(known))))
    required = [f.name for f in fields(SshHost) if f.name != "name" and f.default is MISSING]
    missing = [k for k in required if k not in table]
    if missing:
        raise TargetConfigError("%s: missing key %r" % (where, missing[0]))
    for key, value in table.items():
        kind = _TYPES.get(key, str)
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise TargetConfigError("%s: key %r must be %s, got %r"
                                    % (where, key, getattr(kind, "__name__", "a number"), value))
    if table["kind"] not in KINDS:
        raise TargetConfigError("%s: kind %r is not one of %s" % (where, table["kind"], ", ".join(KINDS)))
    if not table["workdir"].startswith("/"):
        raise TargetConfigError("%s: workdir %r must be an absolute path on the device" % (where, table["workdir"]))
    values = dict(table)
    for key in _PATHS:
        values[key] = str(Path(os.path.expanduser(values[key])))
        if not Path(values[key]).is_file():
            raise TargetConfigError("%s: %s file %s does not exist" % (where, key, values[key]))
    return SshHost(name=name, **values)


def load_targets(path):
    """``{name: SshHost}`` from the targets file at ``path``."""
    path = Path(path)
    if not path.is_file():
        raise TargetConfigError("targets file %s does not exist (give --targets FILE or set "
                                "ODT_BENCH_TARGETS)" % path)
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise TargetConfigError("targets file %s is not valid TOML: %s" % (path, exc))
    unknown = sorted(set(doc) - {"targets"})
    if unknown:
        raise TargetConfigError("%s: unknown top-level key %r; targets go under [targets.NAME]" % (path, unknown[0]))
    return {name: _host(path, name, table) for name, table in doc.get("targets", {}).items()}
