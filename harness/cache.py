"""Content-hashed artifact cache (datasets, checkpoints): files named by their sha256.

Layout under the root (``$ODT_BENCH_CACHE``, default ``~/.cache/odt-bench``)::

    objects/<sha256>           the bytes
    recipes/<sha256 of recipe>.json   {"recipe": {...}, "sha256": "...", "made": {...}}: how an
                                      object was made, and with what (``made_with``)

Writes are atomic (temporary file + rename), so an interrupted write never leaves a bad object.
"""
import hashlib
import io
import json
import os
import platform
import sys
import time
from pathlib import Path

from .device_info import cpu_model


class CacheError(RuntimeError):
    pass


def default_root() -> Path:
    return Path(os.environ.get("ODT_BENCH_CACHE") or Path.home() / ".cache" / "odt-bench")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def made_with():
    """What an artifact made in this process was made with: the same recipe gives other bytes under
    another torch, thread count or CPU (reductions are ordered differently), so the record says which."""
    torch = sys.modules.get("torch")
    return {"torch": getattr(torch, "__version__", None),
            "threads": torch.get_num_threads() if torch else None,
            "python": platform.python_version(), "machine": platform.machine(), "cpu": cpu_model(),
            "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def _atomic_write(path: Path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(".%s.%d.tmp" % (path.name, os.getpid()))
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class ArtifactCache:
    def __init__(self, root=None):
        self.root = Path(root) if root else default_root()

    @property
    def objects(self) -> Path:
        return self.root / "objects"

    def put_bytes(self, data: bytes) -> str:
        sha = sha256_bytes(data)
        path = self.objects / sha
        if not path.exists():
            _atomic_write(path, data)
        return sha

    def put_file(self, path) -> str:
        return self.put_bytes(Path(path).read_bytes())

    def put_torch(self, obj) -> str:
        import torch

        buf = io.BytesIO()
        torch.save(obj, buf)
        return self.put_bytes(buf.getvalue())

    def path(self, sha: str) -> Path:
        path = self.objects / sha
        if not path.is_file():
            raise CacheError("artifact %s is not in the cache at %s" % (sha, self.objects))
        return path

    def _recipe_path(self, recipe) -> Path:
        key = sha256_bytes(json.dumps(recipe, sort_keys=True).encode())
        return self.root / "recipes" / (key + ".json")

    def lookup(self, recipe):
        """The sha256 of the object made by ``recipe``, or None if it was never made (or is gone)."""
        path = self._recipe_path(recipe)
        try:
            sha = json.loads(path.read_text())["sha256"]
        except (OSError, ValueError, KeyError):
            return None
        return sha if (self.objects / sha).is_file() else None

    def remember(self, recipe, sha: str):
        """Record that ``recipe`` made object ``sha``, and with what (``made_with``)."""
        entry = {"recipe": recipe, "sha256": sha, "made": made_with()}
        _atomic_write(self._recipe_path(recipe), json.dumps(entry).encode())

    def made(self, sha: str):
        """``{"recipe": ..., "made": ...}`` of every recipe recorded as making ``sha`` (``made`` is
        None for records older than it), oldest first; empty for objects from elsewhere."""
        entries = []
        for path in sorted((self.root / "recipes").glob("*.json")):
            try:
                entry = json.loads(path.read_text())
            except (OSError, ValueError):
                continue
            if entry.get("sha256") == sha:
                entries.append({"recipe": entry.get("recipe"), "made": entry.get("made")})
        return sorted(entries, key=lambda e: (e["made"] or {}).get("at") or "")
