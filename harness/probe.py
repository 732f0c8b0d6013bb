"""A short probe of what the device's CPU can do, run when the device is described (device side).

Timing ratios of the same cells move between machines of one kind (instances of a VM, boards with
other firmware or cooling): a slower memory system or a slower dispatcher changes the exact and the
sparse backward by different amounts. Three figures, taken once per run before any cell, let a
reader tell a slower machine from a slower method:

- ``copy_bytes_per_s``: ``dst.copy_(src)`` of two fp32 buffers of ``COPY_BYTES`` (or an eighth of
  the device's memory where that is less; ``copy_buffer_bytes``), counted as the bytes read plus
  the bytes written. Large, so that the copy runs from memory, not cache: on the 2-core VM this was
  written on (a 480 MiB L3 reported), 64 MiB buffers gave 37-46 GB/s between processes, 256 MiB
  26.4-27.1;
- ``gemm_flop_per_s``: ``torch.mm`` of two ``GEMM_N``² fp32 matrices, 2·``GEMM_N``³ FLOP;
- ``op_dispatch_ns``: one in-place add on a one-element tensor, the fixed cost of a torch call
  from Python.

Each is the best of ``REPEATS`` timings after one untimed run: the probe estimates what the machine
can do, and interference only slows it. It runs at torch's thread count at that moment, which the
figures record (cells may run at their own).
"""
import time

COPY_BYTES = 256 * 2**20
GEMM_N = 512
DISPATCH_OPS = 1000
REPEATS = 7


def best_ns(work, repeats=REPEATS):
    """The shortest of ``repeats`` timings of ``work()``, after one untimed call."""
    work()
    best = None
    for _ in range(repeats):
        start = time.perf_counter_ns()
        work()
        elapsed = time.perf_counter_ns() - start
        best = elapsed if best is None else min(best, elapsed)
    return best


def probe(memory_bytes=None):
    """The probe's figures and how they were taken (JSON-ready); ``memory_bytes`` is the device's
    memory, where known."""
    import torch

    copy_bytes = COPY_BYTES if memory_bytes is None else min(COPY_BYTES, memory_bytes // 8 // 4 * 4)
    src = torch.ones(copy_bytes // 4)
    dst = torch.empty_like(src)
    copy_ns = best_ns(lambda: dst.copy_(src))
    a, b = torch.rand(GEMM_N, GEMM_N), torch.rand(GEMM_N, GEMM_N)
    out = torch.empty(GEMM_N, GEMM_N)
    gemm_ns = best_ns(lambda: torch.mm(a, b, out=out))
    one = torch.zeros(1)

    def dispatch():
        for _ in range(DISPATCH_OPS):
            one.add_(1.0)

    dispatch_ns = best_ns(dispatch)
    return {
        "copy_bytes_per_s": 2 * copy_bytes * 1e9 / copy_ns,
        "copy_buffer_bytes": copy_bytes,
        "gemm_flop_per_s": 2 * GEMM_N**3 * 1e9 / gemm_ns,
        "op_dispatch_ns": dispatch_ns / DISPATCH_OPS,
        "threads": torch.get_num_threads(),
        "how": "best of %d after one untimed run: copy of %.0f MiB fp32, %d x %d fp32 mm, %d in-place adds"
               % (REPEATS, copy_bytes / 2**20, GEMM_N, GEMM_N, DISPATCH_OPS),
    }
