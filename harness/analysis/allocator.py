"""Bytes held between forward and backward, measured at the allocator (no saved-tensor hooks).

``allocator_saved_bytes`` runs the model's forward under the autograd profiler with
``profile_memory=True``. The CPU allocator reports every allocation and every free to the
profiler with its address and its exact requested size; the allocations made during the forward
and not freed by its end, less the storage of the model's output, are what the autograd graph
keeps alive for backward, however it keeps them (``save_for_backward`` or a tensor hidden on
``ctx``). It is a cross-check of the hook count in ``saved.py``, over the same scope (the model;
the loss is computed after both), and ``harness.agreement.disagreement`` compares them.

What it sees and what it does not:

* only memory allocated inside the forward: parameters, buffers and the input batch are never
  counted, nor is a free of memory allocated before the forward;
* a storage once, whatever views of it are saved; in-place ops (BatchNorm's running statistics in
  train mode) allocate nothing; temporaries freed inside the forward cancel out;
* anything else the forward leaves alive (a cache an op fills, a tensor a module keeps on itself)
  would be counted too, and only CPU memory from torch's allocator is seen.

Allocation addresses come from the profiler's event tree (``experimental_event_tree``, the one
place torch exposes them). Kineto prints two lines per profiling session at its default log
level, so ``KINETO_LOG_LEVEL`` is set to 6 (silent) unless the caller has set it.
"""
import os

import torch

HOW = "CPU allocator events (autograd profiler): allocated in the model's forward and not freed, " \
      "less its output; untimed host pass"


def _allocations(prof):
    """``(time, ptr, signed bytes)`` of every allocator event (frees negative), in order."""
    events, stack = [], list(prof.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        fields = node.extra_fields
        if type(fields).__name__ == "_ExtraFields_Allocation":
            events.append((node.start_time_ns, fields.ptr, fields.alloc_size))
    return sorted(events)


def live_after(fn):
    """``(fn(), {ptr: bytes})``: what ``fn`` allocated and had not freed when it returned."""
    os.environ.setdefault("KINETO_LOG_LEVEL", "6")
    with torch.autograd.profiler.profile(profile_memory=True) as prof:
        result = fn()
    live = {}
    for _, ptr, nbytes in _allocations(prof):
        if nbytes > 0:
            live[ptr] = nbytes
        else:
            live.pop(ptr, None)
    return result, live


def allocator_saved_bytes(model, x):
    """Bytes allocated during the forward of ``model`` on ``x`` and still allocated after it, less
    the storage of the output."""
    out, live = live_after(lambda: model(x))
    live.pop(out.untyped_storage().data_ptr(), None)
    return sum(live.values())
