"""The real-quantized int8 graph of an ``MBConvNet`` (SparseUpdate's training graph) and QAS.

Built from the float model with BN folded (Lin et al., NeurIPS 2022, Sec. 2): per-output-channel
weight scales ``s_W = max|W[o]| / 127``, per-tensor activation scales ``s = max|a| / 127`` from a
calibration batch, an fp32 classifier on the dequantized features. The trained parameters live in
the integer domain: ``W̄ = round(W / s_W)``, ``b̄ = round(b / (s_W · s_x))``. A conv computes the
integer accumulator ``x̄ ⊛ W̄ + b̄`` and requantizes it to its output's scale,
``ȳ = clamp(round(acc · s_W · s_x / s_y))`` (ReLU6 is the clamp to ``[0, round(6 / s_y)]``);
residual adds requantize both inputs to the block output's scale. Rounding passes gradients
straight through; clamping blocks them outside its range.

Values are integers held in float32: on a float CPU this is an emulation of the int8 graph, so
its timings and memory are the emulation's (labelled so), not int8 figures.

QAS (quantization-aware scaling): since ``W = s_W · W̄``, the gradient of ``W̄`` is ``s_W`` times
that of ``W`` while ``W̄`` is ``W / s_W``: ``‖W̄‖ / ‖∇W̄‖`` is ``s_W⁻²`` times the fp32 ratio
(likewise ``(s_W · s_x)⁻²`` for the bias). QAS scales the weight gradient by ``s_W⁻²`` and the
bias gradient by ``(s_W · s_x)⁻²`` before the SGD step, which restores the fp32 ratio; here as
gradient hooks, so every optimizer sees the scaled gradient.
"""
import copy

import torch
import torch.nn.functional as F
from torch import nn

from .models.mbconv import ConvBN, InvertedResidual, MBConvNet

QMAX = 127.0


def _scale(t):
    return max(float(t.detach().abs().max()), 1e-8) / QMAX


def _round(x):
    """round(x) whose gradient is 1 (straight-through)."""
    return x + (torch.round(x) - x).detach()


def quantize_input(x, scale):
    return torch.clamp(torch.round(x / scale), -QMAX - 1, QMAX)


class Int8Conv(nn.Module):
    """A folded conv in the integer domain: ``weight`` (W̄) and ``bias`` (b̄) hold integers."""

    def __init__(self, conv, s_x, s_y, relu6):
        super().__init__()
        weight = conv.weight.detach()
        out_ch = weight.shape[0]
        s_w = weight.abs().flatten(1).max(1).values.clamp_min(1e-12) / QMAX
        self.register_buffer("s_w", s_w)
        self.s_x, self.s_y = s_x, s_y
        self.weight = nn.Parameter(torch.round(weight / s_w.view(out_ch, 1, 1, 1)))
        bias = conv.bias.detach() if conv.bias is not None else torch.zeros(out_ch)
        self.bias = nn.Parameter(torch.round(bias / (s_w * s_x)))
        self.stride, self.padding, self.groups = conv.stride, conv.padding, conv.groups
        self.low, self.high = (0.0, float(round(6.0 / s_y))) if relu6 else (-QMAX - 1, QMAX)

    def forward(self, xq):
        acc = F.conv2d(xq, self.weight, self.bias, self.stride, self.padding, 1, self.groups)
        return torch.clamp(_round(acc * (self.s_w * (self.s_x / self.s_y)).view(1, -1, 1, 1)), self.low, self.high)


class _Unit(nn.Module):
    """Holds an ``Int8Conv`` as ``conv``, so plan layer names (``blocks.3.pw1.conv``) stay valid."""

    def __init__(self, conv):
        super().__init__()
        self.conv = conv

    def forward(self, xq):
        return self.conv(xq)


class _Block(nn.Module):
    def __init__(self, block, scales):
        super().__init__()
        self.pw1 = None if block.pw1 is None else _Unit(scales.conv(block.pw1))
        self.dw, self.pw2 = _Unit(scales.conv(block.dw)), _Unit(scales.conv(block.pw2))
        self.residual = block.residual
        self.s_in, self.s_y, self.s_out = scales.input_of(block), scales.output_of(block.pw2), scales.output_of(block)

    def forward(self, xq):
        y = self.pw1(xq) if self.pw1 is not None else xq
        y = self.pw2(self.dw(y))
        if not self.residual:
            return y
        return torch.clamp(_round((xq * self.s_in + y * self.s_y) / self.s_out), -QMAX - 1, QMAX)


class Int8MBConvNet(nn.Module):
    """The int8 graph: quantize the input, integer convs, dequantize, mean, fp32 classifier."""

    def __init__(self, model, scales):
        super().__init__()
        self.s_in = scales.input_of(model)
        self.stem = _Unit(scales.conv(model.stem))
        self.blocks = nn.Sequential(*[_Block(b, scales) for b in model.blocks])
        self.head = None if model.head is None else _Unit(scales.conv(model.head))
        self.s_features = scales.output_of(model.head if model.head is not None else model.blocks[-1])
        self.classifier = copy.deepcopy(model.classifier)

    def forward(self, x):
        xq = self.blocks(self.stem(quantize_input(x, self.s_in)))
        if self.head is not None:
            xq = self.head(xq)
        return self.classifier((xq * self.s_features).mean((2, 3)))


class _Scales:
    """Per-tensor activation scales of a folded float model, from one calibration forward."""

    def __init__(self, model, x):
        self.inputs, self.outputs = {}, {}
        hooks = [m.register_forward_hook(self._record) for m in model.modules()
                 if isinstance(m, (ConvBN, InvertedResidual, MBConvNet))]
        with torch.no_grad():
            model.eval()(x)
        for h in hooks:
            h.remove()

    def _record(self, module, inputs, output):
        self.inputs[id(module)], self.outputs[id(module)] = _scale(inputs[0]), _scale(output)

    def input_of(self, module):
        return self.inputs[id(module)]

    def output_of(self, module):
        return self.outputs[id(module)]

    def conv(self, unit):
        return Int8Conv(unit.conv, self.input_of(unit), self.output_of(unit), isinstance(unit.act, nn.ReLU6))


def int8_graph(folded, calibration):
    """The int8 graph of ``folded`` (an ``MBConvNet`` with BN folded), scales from ``calibration``."""
    if not isinstance(folded, MBConvNet) or any(isinstance(m, nn.BatchNorm2d) for m in folded.modules()):
        raise ValueError("the int8 graph is built from an MBConvNet with BN folded")
    return Int8MBConvNet(folded, _Scales(folded, calibration))


def apply_qas(model):
    """Scale the gradients of every trainable ``Int8Conv`` weight by s_W⁻² and bias by (s_W·s_x)⁻²."""
    for module in model.modules():
        if not isinstance(module, Int8Conv):
            continue
        weight_scale = module.s_w.pow(-2).view(-1, 1, 1, 1)
        bias_scale = (module.s_w * module.s_x).pow(-2)
        if module.weight.requires_grad:
            module.weight.register_hook(lambda grad, s=weight_scale: grad * s)
        if module.bias.requires_grad:
            module.bias.register_hook(lambda grad, s=bias_scale: grad * s)
