"""Boolean masks packed 8 elements to a byte, and unpacked straight into a multiplier.

Torch has no packbits. Elementwise boolean ops are slow on the CPU, so the mask is formed as
floats (0 or 1), packed with one matrix-vector product by the bit weights, and unpacked through a
256 x 8 lookup table of floats: a few vectorised float ops, no boolean tensors.
"""
import torch
import torch.nn.functional as F

BIT_WEIGHTS = torch.tensor([1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0])
BYTE_BITS = ((torch.arange(256).unsqueeze(1) >> torch.arange(8)) & 1).float()
"""Row b holds the 8 bits of byte value b, least significant first, as floats."""


def packed_bytes(numel):
    """Bytes that ``numel`` packed elements occupy."""
    return -(-numel // 8)


def pack(ones):
    """A tensor of 0.0/1.0 values as a flat uint8 tensor of ``packed_bytes(ones.numel())`` bytes;
    element ``8j + i`` (flattened, C order) is bit ``i`` of byte ``j``."""
    flat = ones.reshape(-1)
    pad = -flat.numel() % 8
    if pad:
        flat = F.pad(flat, (0, pad))
    return (flat.view(-1, 8) @ BIT_WEIGHTS.to(flat.device, flat.dtype)).to(torch.uint8)


def unpack(packed, shape, dtype=torch.float32):
    """The 0/1 tensor of ``shape`` that ``pack`` packed, in ``dtype``."""
    numel = 1
    for d in shape:
        numel *= d
    ones = BYTE_BITS.to(packed.device, dtype).index_select(0, packed.to(torch.int32)).view(-1)
    return ones[:numel].view(shape)
