"""When two independent measurements of the bytes kept for backward agree — the saved-tensor hooks
and the allocator's record (``harness/analysis/allocator.py``). Torch-free: reports use it too."""
AGREE_FRACTION, AGREE_BYTES = 0.10, 1024
"""They agree within the larger of this fraction of the allocator figure and this many bytes."""


def disagreement(hooks, allocator):
    """None when the two byte counts agree, else a sentence saying by how much they differ."""
    gap, limit = abs(hooks - allocator), max(AGREE_FRACTION * allocator, AGREE_BYTES)
    if gap <= limit:
        return None
    return "hooks count %d B, the allocator %d B: they differ by %d B, over the %d B allowed" % (
        hooks, allocator, gap, limit)
