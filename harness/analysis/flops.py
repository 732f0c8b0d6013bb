"""FLOPs counted on the executed graph by ``torch.utils.flop_counter`` (matmuls and convs only).

One correction: torch's formula for ``aten.convolution_backward`` ignores ``groups`` in the
weight-gradient term, which over-counts a depthwise conv's weight gradient by a factor of
channels/batch. We register a groups-aware formula: for a (non-transposed) conv, the input
gradient and the weight gradient each cost as many FLOPs as the forward (2 per MAC), counted only
for the gradients the graph actually requests (``output_mask``).
"""
import math

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode, conv_backward_flop


def conv_backward_flops(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation,
                        transposed, output_padding, groups, output_mask, out_shape=None, **kwargs):
    if transposed:
        return conv_backward_flop.__wrapped__(grad_out_shape, x_shape, w_shape, bias, stride, padding, dilation,
                                              transposed, output_padding, groups, output_mask, out_shape)
    forward = 2 * x_shape[0] * math.prod(w_shape) * math.prod(grad_out_shape[2:])
    return forward * (int(bool(output_mask[0])) + int(bool(output_mask[1])))


def counter():
    return FlopCounterMode(display=False,
                           custom_mapping={torch.ops.aten.convolution_backward: conv_backward_flops})


def count_flops(model, x, y):
    """``{"forward", "backward"}`` FLOPs of one training step's forward (model + loss) and backward."""
    with counter() as fwd:
        loss = F.cross_entropy(model(x), y)
    with counter() as bwd:
        loss.backward()
    model.zero_grad(set_to_none=True)
    return {"forward": fwd.get_total_flops(), "backward": bwd.get_total_flops()}
