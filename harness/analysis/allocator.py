"""Bytes held between forward and backward, measured at the allocator (no saved-tensor hooks).

``allocator_saved_bytes`` runs one forward (model + cross-entropy loss) under
``torch.profiler.profile(profile_memory=True)``. The CPU allocator reports every allocation and
every free to the profiler with its address and its exact requested size, so the allocations made
during the forward and not freed by its end are the memory the forward left behind; the storages of
the model output and the loss are then taken out. What remains is what the autograd graph keeps
alive for backward, however it is kept: ``save_for_backward`` or a tensor hidden on ``ctx``.

Limits: only memory allocated inside the forward is seen, so parameters, buffers (BatchNorm's
running statistics are updated in place) and the batch (inputs *and* targets) are never counted.
A storage is counted once however many views of it exist; in-place ops allocate nothing. A free of
memory allocated before the forward is ignored. Anything else the forward leaves alive (a cache an
op fills, a tensor a module stores on itself) would be counted too. Reads the profiler's event tree
(``experimental_event_tree``), the one place torch exposes allocation addresses.
"""
import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

HOW = "torch.profiler CPU allocator events: allocated and not freed during forward + loss, " \
      "output and loss storages excluded; untimed host pass"


def _allocations(prof):
    """``(time, ptr, signed bytes)`` of every allocator event, in order."""
    events, stack = [], list(prof.profiler.kineto_results.experimental_event_tree())
    while stack:
        node = stack.pop()
        stack.extend(node.children)
        fields = node.extra_fields
        if type(fields).__name__ == "_ExtraFields_Allocation":
            events.append((node.start_time_ns, fields.ptr, fields.alloc_size))
    return sorted(events)


def live_after(fn):
    """Run ``fn()`` under the profiler; ``(result, {ptr: bytes})`` allocated in it and still live."""
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        result = fn()
    live = {}
    for _, ptr, nbytes in _allocations(prof):
        if nbytes > 0:
            live[ptr] = nbytes
        else:
            live.pop(ptr, None)
    return result, live


def allocator_saved_bytes(model, x, y):
    """Bytes allocated during one forward (model + loss) of ``(x, y)`` and still allocated after it,
    less the storages of the output and the loss."""
    def forward():
        out = model(x)
        return out, F.cross_entropy(out, y)

    (out, loss), live = live_after(forward)
    for t in (out, loss):
        live.pop(t.untyped_storage().data_ptr(), None)
    return sum(live.values())


def agree(hooks, allocator, rel=0.10, floor=1024):
    """None when two byte counts agree within ``max(rel * allocator, floor)``, else why not."""
    gap, limit = abs(hooks - allocator), max(rel * allocator, floor)
    if gap <= limit:
        return None
    return "hooks count %d B, the allocator %d B: they differ by %d B (limit %d B)" % (
        hooks, allocator, gap, limit)
