"""Content-hashed artifact cache (datasets, checkpoints): files named by their sha256.

Layout under the root (``$ODT_BENCH_CACHE``, default ``~/.cache/odt-bench``)::

    objects/<sha256>           the bytes
    recipes/<sha256 of recipe>.json   {"recipe": {...}, "sha256": "..."}: how an object was made

Writes are atomic (temporary file + rename), so an interrupted write never leaves a bad object.
"""
import hashlib
import io
import json
import os
from pathlib import Path


class CacheError(RuntimeError):
    pass


def default_root() -> Path:
    return Path(os.environ.get("ODT_BENCH_CACHE") or Path.home() / ".cache" / "odt-bench")


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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
        _atomic_write(self._recipe_path(recipe), json.dumps({"recipe": recipe, "sha256": sha}).encode())
