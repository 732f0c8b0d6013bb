"""The C kernels of ``bits.c``, built on first use with the device's own C compiler and loaded
with ctypes (no torch headers, no build system: one ``cc`` call of well under a second).

The library lands in ``$ODT_OPS_BUILD_DIR`` (default: ``ops/`` in ``$ODT_BENCH_CACHE``, else in
``~/.cache/odt-bench``) under a name
hashing the source, the flags, the machine and its CPU, since ``-march=native`` code runs only on
the CPU it was built for. Where no compiler works, ``library()`` says why and the ops use the
torch-op implementation in ``bits.py`` instead; ``backend()`` names the one in use, and the device
reports it with every result.
"""
import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile

SOURCE = os.path.join(os.path.dirname(os.path.abspath(__file__)), "bits.c")
FLAG_SETS = (("-O3", "-march=native"), ("-O3",))
_loaded = {}


def _cpu_identity():
    try:
        with open("/proc/cpuinfo") as f:
            text = f.read()
    except OSError:
        text = platform.processor()
    lines = [line for line in text.splitlines() if line.split(":")[0].strip() in ("model name", "flags", "Features", "CPU part")]
    return "\n".join(sorted(set(lines)))


def _build_dir():
    if os.environ.get("ODT_OPS_BUILD_DIR"):
        return os.environ["ODT_OPS_BUILD_DIR"]
    cache = os.environ.get("ODT_BENCH_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "odt-bench")
    return os.path.join(cache, "ops")


def _build(source, flags):
    """The path of the shared library built from ``source`` with ``flags`` (built if missing)."""
    with open(source, "rb") as f:
        code = f.read()
    key = hashlib.sha256(code + repr((flags, platform.machine(), _cpu_identity())).encode()).hexdigest()[:16]
    directory = _build_dir()
    path = os.path.join(directory, "libodtbits-%s.so" % key)
    if os.path.isfile(path):
        return path
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".so.tmp")
    os.close(fd)
    try:
        compiler = os.environ.get("CC", "cc")
        subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", tmp, source], check=True,
                       capture_output=True, timeout=120)
        os.replace(tmp, path)  # atomic: a concurrent build of the same key writes the same bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def _load(path):
    lib = ctypes.CDLL(path)
    pointers = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.odt_clamp_pack.argtypes = pointers + [ctypes.c_float]
    lib.odt_masked_grad.argtypes = pointers
    lib.odt_clamp_pack.restype = lib.odt_masked_grad.restype = None
    return lib


def library():
    """``(ctypes library or None, description)``: built and loaded once per process."""
    if "lib" not in _loaded:
        errors = []
        for flags in FLAG_SETS:
            try:
                path = _build(SOURCE, flags)
                _loaded["lib"], _loaded["how"] = _load(path), "C kernels (%s, %s)" % (" ".join(flags), path)
                break
            except (OSError, subprocess.SubprocessError) as exc:
                stderr = getattr(exc, "stderr", b"") or b""
                errors.append("%s: %s %s" % (" ".join(flags), exc, stderr.decode(errors="replace").strip()[-200:]))
        else:
            _loaded["lib"], _loaded["how"] = None, "torch ops (no C build: %s)" % "; ".join(errors)
    return _loaded["lib"], _loaded["how"]


def backend():
    """Which implementation the 1-bit masks use in this process, in words."""
    return library()[1]
