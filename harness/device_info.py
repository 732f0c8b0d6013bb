"""What a Python device knows about itself: the fingerprint (with the speed probe of
``harness.probe``) and memory readings (device side).

Linux files are read where they exist; anything unreadable is ``None`` with no guessing.
"""
import ctypes
import os
import platform

from . import probe


def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def cpu_model():
    """The CPU's model as /proc/cpuinfo names it (x86 'model name', Arm 'Model' or 'Hardware')."""
    for line in (_read("/proc/cpuinfo") or "").splitlines():
        if line.split(":")[0].strip() in ("model name", "Model", "Hardware"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or None


def status_bytes(field):
    """A ``VmRSS``/``VmHWM``-style field of /proc/self/status in bytes, or None."""
    for line in (_read("/proc/self/status") or "").splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return None


def reset_peak_rss():
    """Reset this process's RSS high-water mark (Linux: write 5 to clear_refs); True on success."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def trim_heap():
    """Give the allocator's free memory back to the OS (glibc ``malloc_trim``); True if done.

    After warm-up the heap already holds a step's working memory, so the RSS at the start of the
    timed steps would include their peak; trimming first makes the high-water mark of the timed
    steps show what they need. Costs page faults in the first timed step only.
    """
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


class PeakWindow:
    """The RSS high-water mark over a ``with`` block, relative to the RSS at its start (Linux),
    and with ``cuda`` the CUDA allocator's peak over it, relative to what was allocated at its start.

    The heap is trimmed and the high-water mark reset on entry (and the allocator's peak statistics,
    with ``cuda``), so the figures show what the block itself needs; ``record()`` is the device
    result's ``memory`` object.
    """

    def __init__(self, cuda=False):
        self.cuda = cuda

    def __enter__(self):
        self.hwm_before = status_bytes("VmHWM") or 0
        self.trimmed = trim_heap()
        self.start_rss = status_bytes("VmRSS")
        self.reset_ok = reset_peak_rss()
        self.hwm = None
        if self.cuda:
            import torch

            # the allocator counts on the host as tensors are allocated: no synchronisation needed
            torch.cuda.reset_peak_memory_stats()
            self.cuda_start = torch.cuda.memory_allocated()
        return self

    def __exit__(self, *exc):
        self.hwm = status_bytes("VmHWM") if self.reset_ok else None
        if self.cuda:
            import torch

            self.cuda_max = torch.cuda.max_memory_allocated()
        return False

    def record(self):
        record = {"peak_rss_bytes": max(self.hwm_before, status_bytes("VmHWM") or 0) or None,
                  "train_start_rss_bytes": self.start_rss,
                  "train_hwm_bytes": self.hwm,
                  "hwm_reset": self.reset_ok,
                  "heap_trimmed": self.trimmed}
        if self.cuda:
            record.update(cuda_train_start_allocated_bytes=self.cuda_start,
                          cuda_train_max_allocated_bytes=self.cuda_max)
        return record


def mem_total_bytes():
    for line in (_read("/proc/meminfo") or "").splitlines():
        if line.startswith("MemTotal:"):
            return int(line.split()[1]) * 1024
    return None


def describe():
    import torch

    return {
        "board": platform.machine(),
        "hostname": platform.node(),
        "os": platform.platform(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "memory_capacity_bytes": mem_total_bytes(),
        "governor": _read("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor"),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "torch_config": torch.__config__.show(),
        "torch_parallel": torch.__config__.parallel_info(),
        "cuda_version": torch.version.cuda,
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "malloc_env": {k: v for k, v in sorted(os.environ.items()) if k.startswith("MALLOC_")},
        "probe": probe.probe(mem_total_bytes()),
    }
