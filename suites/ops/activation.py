"""ReLU6 and ReLU that keep a 1-bit-per-element mask for backward instead of a float tensor.

``MaskedReLU6`` and ``MaskedReLU`` stand alone (after a conv whose whole weight is trained, a
filtered conv, a residual add); the frozen and channel-subset convs apply the same two helpers
inside their own op (``relu6=True``), so a conv and its activation cost one autograd node, not two.
"""
import math

import torch
from torch import nn

from . import bits, native

_ONE = {}


def clamp_and_mask(y, high=6.0):
    """``(clamp(y, 0, high), packed mask)`` (ReLU6: high 6, ReLU: high infinity): the mask has a 1
    where 0 < y < high, the elements a gradient passes (as stock ``hardtanh_backward`` and
    ``threshold_backward``), packed 8 to a byte."""
    lib = native.kernels(y)
    if lib is not None:
        out, packed = torch.empty_like(y), torch.empty(bits.packed_bytes(y.numel()), dtype=torch.uint8)
        lib.odt_clamp_pack(y.data_ptr(), out.data_ptr(), packed.data_ptr(), y.numel(), high)
        return out, packed
    one = _ONE.get((y.dtype, y.device))
    if one is None:
        one = _ONE[y.dtype, y.device] = torch.ones(1, dtype=y.dtype, device=y.device)
    passes = torch.ops.aten.hardtanh_backward(one.expand(y.shape), y, 0.0, high)
    return y.clamp(0.0, high), bits.pack(passes)



def masked_grad(grad, packed):
    """``grad`` with the elements the mask blocks set to 0."""
    lib = native.kernels(grad)
    if lib is not None:
        out = torch.empty_like(grad)
        lib.odt_masked_grad(grad.data_ptr(), packed.data_ptr(), out.data_ptr(), grad.numel())
        return out
    return bits.unpack(packed, grad.shape, grad.dtype).mul_(grad)


class _MaskedClamp(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, high):
        y, packed = clamp_and_mask(x, high)
        ctx.save_for_backward(packed)
        return y

    @staticmethod
    def backward(ctx, grad):
        return masked_grad(grad, ctx.saved_tensors[0]), None


class MaskedReLU6(nn.Module):
    """``nn.ReLU6`` whose backward needs 1 bit per element (packed), not the 4-byte input. Where no
    gradient can flow (the input needs none, or grad is off) it is plain ``relu6``."""

    HIGH = 6.0

    def forward(self, x):
        if x.requires_grad and torch.is_grad_enabled():
            return _MaskedClamp.apply(x, self.HIGH)
        return x.clamp(0.0, self.HIGH)


class MaskedReLU(MaskedReLU6):
    """``nn.ReLU`` whose backward needs 1 bit per element, not the 4-byte output."""

    HIGH = math.inf
