"""Host provenance recorded with every cell: code version, packages, host, schema."""
import platform
import subprocess
from importlib import metadata
from pathlib import Path

from .journal import SCHEMA_VERSION

PACKAGES = ("odt-bench", "torch", "numpy", "pandas", "matplotlib", "mlxtend", "pytest",
            "pytest-benchmark")
ROOT = Path(__file__).resolve().parent.parent


def _git(*args):
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() if out.returncode == 0 else None


def _version(name):
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def host_provenance():
    status = _git("status", "--porcelain", "--untracked-files=no")
    return {
        "schema_version": SCHEMA_VERSION,
        "git_sha": _git("rev-parse", "HEAD"),
        "git_dirty": None if status is None else bool(status),
        "packages": {name: _version(name) for name in PACKAGES},
        "host": {"python": platform.python_version(), "platform": platform.platform(),
                 "machine": platform.machine()},
    }
