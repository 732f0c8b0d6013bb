"""The C kernels of ``bits.c`` (1-bit masks) and ``filtered.c`` (the filtered conv's window sums,
kernel sums, spreading and weight-gradient broadcast), built on first use into one library with the
device's own C compiler and loaded with ctypes (no torch headers, no build system: one ``cc`` call
of well under a second).

The library lands in ``$ODT_OPS_BUILD_DIR`` (default: ``ops/`` in ``$ODT_BENCH_CACHE``, else in
``~/.cache/odt-bench``) under a name
hashing the sources, the flags, the machine and its CPU, since ``-march=native`` code runs only on
the CPU it was built for. The first build tried adds ``-fopenmp``, so that the large kernel calls
run on the threads of torch's own OpenMP runtime; it is kept only where loading it brought no
second runtime into the process (two pools would fight over the same cores), else the next flag
set builds the kernels single-threaded (the refused library stays loaded, unused). Where no
compiler works, ``library()`` says why and the ops use their
torch-op implementations instead (``bits.py``, ``filtered.py``); ``backend()`` names the one in
use, and the device reports it with every result.
"""
import ctypes
import hashlib
import os
import platform
import re
import subprocess
import tempfile

import torch

SOURCES = tuple(os.path.join(os.path.dirname(os.path.abspath(__file__)), name) for name in ("bits.c", "filtered.c"))
FLAG_SETS = (("-O3", "-march=native", "-fopenmp"), ("-O3", "-march=native"), ("-O3",))
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


def _build(sources, flags):
    """The path of the shared library built from ``sources`` with ``flags`` (built if missing)."""
    code = b""
    for source in sources:
        with open(source, "rb") as f:
            code += f.read() + b"\0"
    key = hashlib.sha256(code + repr((flags, platform.machine(), _cpu_identity())).encode()).hexdigest()[:16]
    directory = _build_dir()
    path = os.path.join(directory, "libodtops-%s.so" % key)
    if os.path.isfile(path):
        return path
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".so.tmp")
    os.close(fd)
    try:
        compiler = os.environ.get("CC", "cc")
        subprocess.run([compiler, *flags, "-shared", "-fPIC", "-o", tmp, *sources], check=True,
                       capture_output=True, timeout=120)
        os.replace(tmp, path)  # atomic: a concurrent build of the same key writes the same bytes
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return path


def openmp_runtimes():
    """The OpenMP runtime files mapped into this process (GNU, LLVM or Intel), None where the
    process's map cannot be read (not Linux)."""
    try:
        with open("/proc/self/maps") as f:
            files = {fields[-1] for fields in map(str.split, f) if len(fields) == 6}
    except OSError:
        return None
    return {path for path in files if re.match(r"lib(gomp|omp|iomp\d*)[-.]", os.path.basename(path))}


def _load(path, openmp):
    """Load the library at ``path``; an ``openmp`` build only if loading it mapped no OpenMP runtime
    besides the one torch already uses."""
    before = openmp_runtimes()
    lib = ctypes.CDLL(path)
    if openmp:
        after = openmp_runtimes()
        if not before or after != before:
            raise OSError("its OpenMP runtime is not torch's (torch's: %s; after loading: %s)"
                          % (sorted(before or ()) or "none", sorted(after or ()) or "unknown"))
    pointers = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64]
    lib.odt_clamp_pack.argtypes = pointers + [ctypes.c_float]
    lib.odt_masked_grad.argtypes = pointers
    lib.odt_kernel_sums.argtypes = pointers[:2] + [ctypes.c_int64] * 2 + [ctypes.c_int]
    lib.odt_kernel_broadcast.argtypes = pointers[:2] + [ctypes.c_int64] * 2 + [ctypes.c_int]
    lib.odt_spread.argtypes = pointers[:2] + [ctypes.c_int64] * 7 + [ctypes.c_int]
    lib.odt_window_sums.argtypes = pointers[:2] + [ctypes.c_int64] * 7 + [ctypes.c_int]
    kernels = (lib.odt_clamp_pack, lib.odt_masked_grad, lib.odt_kernel_sums, lib.odt_kernel_broadcast, lib.odt_spread,
               lib.odt_window_sums)
    for kernel in kernels:
        kernel.restype = None
    return lib


def library():
    """``(ctypes library or None, description)``: built and loaded once per process."""
    if "lib" not in _loaded:
        errors = []
        for flags in FLAG_SETS:
            try:
                path = _build(SOURCES, flags)
                lib = _load(path, "-fopenmp" in flags)
                refused = "; refused before: " + "; ".join(errors) if errors else ""
                _loaded["lib"], _loaded["how"] = lib, "C kernels (%s, %s%s)" % (" ".join(flags), path, refused)
                break
            except (OSError, subprocess.SubprocessError) as exc:
                stderr = getattr(exc, "stderr", b"") or b""
                errors.append("%s: %s %s" % (" ".join(flags), exc, stderr.decode(errors="replace").strip()[-200:]))
        else:
            _loaded["lib"], _loaded["how"] = None, "torch ops (no C build: %s)" % "; ".join(errors)
    return _loaded["lib"], _loaded["how"]


def kernels(*tensors):
    """The C library when every tensor suits it (contiguous float32 on the CPU), else None."""
    lib, _ = library()
    if lib is None or not all(t.dtype == torch.float32 and t.is_contiguous() and t.device.type == "cpu"
                              for t in tensors):
        return None
    return lib


def backend():
    """Which implementation the masks and the filtered conv use in this process, in words."""
    return library()[1]
