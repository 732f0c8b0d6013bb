"""Convolutions whose backward computes and keeps only what the UpdatePlan trains.

- ``FrozenConv2d``: the weight is frozen (bias trained or not). Its input gradient needs only the
  weight, so it saves no input; the bias gradient is exact.
- ``ChannelConv2d``: the weight is trained on a subset of input channels (depthwise: of its
  channels). It saves only those channels of its input and computes the weight gradient only for
  them; the trained part is its own parameter (``weight_part``), never a full-size gradient.

With ``relu6=True`` either applies the ReLU6 that follows it inside the same op, keeping the
activation's 1-bit mask (``activation.py``): one autograd node per conv and activation. Both save
through ``save_for_backward`` only (a 1x1 frozen conv without activation runs as a matrix product,
whose native autograd keeps only the weight), so saved-tensor hooks see all they keep.

The full weight is a buffer: ``ChannelConv2d`` writes ``weight_part`` into it before a forward
whenever the optimizer has changed it (tracked by the tensor's version counter). Input gradients
are one transposed convolution or, for 1x1 convs, one matrix product, since a backward written in
Python pays for every op it calls.
"""
import torch
import torch.nn.functional as F
from torch import nn

from .activation import clamp_and_mask, masked_grad


class _Geometry:
    """A conv's stride, padding, dilation and groups; its forward and the products that map its
    output gradient back onto its input."""

    def __init__(self, conv):
        self.stride, self.padding = tuple(conv.stride), tuple(conv.padding)
        self.dilation, self.groups = tuple(conv.dilation), conv.groups
        self.kernel = tuple(conv.kernel_size)
        self.pointwise = (self.kernel, self.stride, self.padding, self.groups) == ((1, 1), (1, 1), (0, 0), 1)

    def conv(self, x, weight, bias):
        if not self.pointwise:
            return F.conv2d(x, weight, bias, self.stride, self.padding, self.dilation, self.groups)
        # a matrix product over channels: one addmm at batch 1 (the fewest autograd nodes)
        out_ch, in_ch = weight.shape[:2]
        w = weight.view(out_ch, in_ch)
        if x.shape[0] == 1 and bias is not None:
            y = torch.addmm(bias.view(out_ch, 1), w, x.reshape(in_ch, -1))
        else:
            y = torch.matmul(w, x.flatten(2))
            if bias is not None:
                y = y + bias.view(out_ch, 1)
        return y.view(x.shape[0], out_ch, *x.shape[2:])

    def output_padding(self, in_size, out_size):
        """The rows and columns a stride drops, which the transposed conv must add back."""
        return tuple(i + 2 * p - d * (k - 1) - 1 - (o - 1) * s for i, o, s, p, d, k in zip(
            in_size, out_size, self.stride, self.padding, self.dilation, self.kernel))

    def input_grad(self, grad, weight, output_padding):
        if self.pointwise:
            out_ch, in_ch = weight.shape[:2]
            w = weight.view(out_ch, in_ch).t()
            if grad.shape[0] == 1:
                return torch.mm(w, grad.reshape(out_ch, -1)).view(1, in_ch, *grad.shape[2:])
            return torch.matmul(w, grad.flatten(2)).view(grad.shape[0], in_ch, *grad.shape[2:])
        return F.conv_transpose2d(grad, weight, None, self.stride, self.padding, output_padding,
                                  self.groups, self.dilation)

    def weight_grad(self, grad, x_part, weight_part, channels):
        """The gradient of ``weight_part``: the weight on the input channels ``channels`` (whose
        input is ``x_part``) or, depthwise, the weight of those channels."""
        if self.pointwise:  # (out x pixels) @ (pixels x channels), summed over the batch
            g, x = grad.flatten(2), x_part.flatten(2)
            gw = torch.mm(g[0], x[0].t()) if grad.shape[0] == 1 else torch.matmul(g, x.transpose(1, 2)).sum(0)
            return gw.view(weight_part.shape)
        if self.groups == 1:
            part_grad, part_groups = grad, 1
        else:  # depthwise: channel c's weight sees only output channel c
            part_grad, part_groups = grad.index_select(1, channels), len(channels)
        return torch.ops.aten.convolution_backward(
            part_grad, x_part, weight_part, None, self.stride, self.padding, self.dilation, False, [0, 0],
            part_groups, (False, True, False))[1]


def _forward(ctx, geometry, x, weight, bias, relu6):
    """The conv (and its ReLU6) forward; records what backward needs besides saved tensors."""
    y = geometry.conv(x, weight, bias)
    ctx.geometry, ctx.relu6 = geometry, relu6
    ctx.output_padding = geometry.output_padding(x.shape[2:], y.shape[2:])
    if relu6:
        return clamp_and_mask(y)
    return y, None


class _FrozenConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, bias, geometry, relu6):
        y, mask = _forward(ctx, geometry, x, weight, bias, relu6)
        ctx.save_for_backward(weight if ctx.needs_input_grad[0] else None, mask)
        return y

    @staticmethod
    def backward(ctx, grad):
        weight, mask = ctx.saved_tensors
        if mask is not None:
            grad = masked_grad(grad, mask)
        gx = ctx.geometry.input_grad(grad, weight, ctx.output_padding) if weight is not None else None
        return gx, None, grad.sum((0, 2, 3)) if ctx.needs_input_grad[2] else None, None, None


def _weight_copy(conv):
    return conv.weight.detach().clone()


class FrozenConv2d(nn.Module):
    """A conv with a frozen weight; its bias (if any) trained when ``train_bias``; the ReLU6 after
    it applied inside when ``relu6``."""

    def __init__(self, conv, train_bias, relu6=False):
        super().__init__()
        _check_supported(conv)
        self.geometry, self.relu6 = _Geometry(conv), relu6
        self.register_buffer("weight", _weight_copy(conv))
        bias = None if conv.bias is None else conv.bias.detach().clone()
        if bias is not None and train_bias:
            self.bias = nn.Parameter(bias)
        else:
            self.register_buffer("bias", bias)

    def forward(self, x):
        needs_grad = torch.is_grad_enabled() and (x.requires_grad or getattr(self.bias, "requires_grad", False))
        if needs_grad and (self.relu6 or not self.geometry.pointwise):
            return _FrozenConv.apply(x, self.weight, self.bias, self.geometry, self.relu6)
        y = self.geometry.conv(x, self.weight, self.bias)  # 1x1: native autograd keeps the weight only
        return F.relu6(y) if self.relu6 else y


class _ChannelConv(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, weight, weight_part, bias, channels, geometry, relu6):
        y, mask = _forward(ctx, geometry, x, weight, bias, relu6)
        ctx.save_for_backward(x.index_select(1, channels), weight, weight_part, channels, mask)
        return y

    @staticmethod
    def backward(ctx, grad):
        x_part, weight, weight_part, channels, mask = ctx.saved_tensors
        geometry = ctx.geometry
        if mask is not None:
            grad = masked_grad(grad, mask)
        gx = geometry.input_grad(grad, weight, ctx.output_padding) if ctx.needs_input_grad[0] else None
        gb = grad.sum((0, 2, 3)) if ctx.needs_input_grad[3] else None
        return gx, None, geometry.weight_grad(grad, x_part, weight_part, channels), gb, None, None, None


class ChannelConv2d(nn.Module):
    """A conv whose weight is trained only on input ``channels`` (depthwise: those channels), its
    bias in full; the ReLU6 after it applied inside when ``relu6``. Regular (groups = 1) and
    depthwise convs."""

    def __init__(self, conv, channels, relu6=False):
        super().__init__()
        _check_supported(conv)
        depthwise = conv.groups > 1
        if depthwise and not conv.groups == conv.in_channels == conv.out_channels:
            raise ValueError("channel-subset updates support regular and depthwise convs, not %d groups"
                             % conv.groups)
        width = conv.in_channels
        channels = sorted(set(int(c) for c in channels))
        if not channels or channels[0] < 0 or channels[-1] >= width:
            raise ValueError("channels %s are not a non-empty subset of the conv's %d input channels"
                             % (channels, width))
        self.geometry, self.relu6 = _Geometry(conv), relu6
        self.channel_dim = 0 if depthwise else 1
        self.register_buffer("channels", torch.tensor(channels, dtype=torch.long))
        self.register_buffer("weight", _weight_copy(conv))
        self.weight_part = nn.Parameter(self.weight.index_select(self.channel_dim, self.channels).clone())
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone())
        self._written = self.weight_part._version

    @torch.no_grad()
    def _write_part(self):
        if self.weight_part._version != self._written:
            self.weight.index_copy_(self.channel_dim, self.channels, self.weight_part)
            self._written = self.weight_part._version

    def forward(self, x):
        self._write_part()
        if not torch.is_grad_enabled():
            y = self.geometry.conv(x, self.weight, self.bias)
            return F.relu6(y) if self.relu6 else y
        return _ChannelConv.apply(x, self.weight, self.weight_part, self.bias, self.channels, self.geometry,
                                  self.relu6)


def _check_supported(conv):
    if not isinstance(conv, nn.Conv2d):
        raise ValueError("only nn.Conv2d is supported, got %s" % type(conv).__name__)
    if conv.padding_mode != "zeros" or isinstance(conv.padding, str):
        raise ValueError("only explicit zero padding is supported, got padding=%r padding_mode=%r"
                         % (conv.padding, conv.padding_mode))
