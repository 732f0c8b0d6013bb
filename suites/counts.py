"""Analytic counts from the model's structure and the plan, each under a named convention.

Structure comes from one forward of the model *as built* (BN unfolded, stock layers), recording
every conv, linear, ReLU6 and ReLU in forward order (``forward_layers``); the plan says what each
layer trains, and ``plan_counts`` is plain arithmetic over the two, so a policy on the device
(TinyTrain) costs its candidate plans with the same code the host reports them with. A
``channels`` update trains the fraction k / C of a conv's weight (k of its C input channels;
depthwise: of its channels).

Conventions, per batch of B unless marked per sample:

- ``forward_macs``: conv and linear multiply-accumulates of one forward.
- ``exact_backward_macs``: what an exact backward computes: a layer's weight gradient (as many
  MACs as its forward, times the trained fraction) when its weight is trained, and its input
  gradient (as many as its forward) when any trainable parameter lies before it in forward order.
  BN and elementwise work are not counted.
- ``tinytrain_macs`` (TinyTrain's backward-compute column): the input gradient of every conv from
  the earliest trainable conv to the end, that one included, plus the weight gradients of the
  trained channels; convs only (the classifier is not counted).
- ``gradfilter_flops`` (the GradFilter paper's backward-FLOP formulas, REFERENCE §4; convs only):
  for every conv whose weight is trained, its weight gradient, and for those after the earliest
  trainable layer also its input gradient. Exact: 2 * B * C_in/groups * C_out * H_out * W_out * k^2
  FLOPs per gradient (times the trained fraction for a weight gradient); filtered with patch r
  over P = ceil(H_out/r) * ceil(W_out/r) patches: weight gradient C_out * C_in/groups *
  (2 * B * P - 1), input gradient B * P * C_in * (2 * C_out/groups - 1).
- ``saved_inputs_fp32`` (per sample): fp32 bytes of the inputs that the convs whose weights are
  trained must keep for their weight gradients (only the trained channels; a filtered conv its
  pooled input, C_in * P); classifier excluded (the GradFilter paper's Table 2 convention).
- ``plan_fp32`` (per sample; plans with BN folded): what this harness's op library
  (``ops = "odt"``) keeps between forward and backward: fp32 inputs of the trained channels of
  every conv whose weight is trained (a filtered conv: its pooled input) and of the classifier,
  and one bit per element for every ReLU6 and ReLU that a gradient passes (rounded up to whole
  bytes per activation).
- ``sparseupdate_int8`` (per sample; the SparseUpdate paper's code): for every updated conv 1 bit
  per output element (the clamp mask) and 32 bits per bias; for a trained weight also 8 bits per
  saved input element of the trained channels and 8 bits per trained weight (an SRAM copy); the
  classifier's input at 8 bits per element, its weights 0; no optimizer state.
"""
from dataclasses import dataclass, replace

import torch
from torch import nn

from suites.models import build


ACTIVATIONS = (nn.ReLU6, nn.ReLU)
"""The activations whose 1-bit masks ``plan_fp32`` counts (the op library's masked ones)."""


@dataclass(frozen=True)
class Layer:
    """One conv, linear or activation (ReLU6, ReLU) of a forward, with its shapes (batch of B) and
    its plan entry."""

    name: str
    module: nn.Module
    in_shape: tuple
    out_shape: tuple
    update: dict  # the plan's layer entry; {} for an activation

    @property
    def macs(self):
        return layer_macs(self.module, self.out_shape) if self.update else 0

    @property
    def trained_fraction(self):
        """The fraction of the weight trained: 1 (weight), k / C (channels), else 0."""
        update = self.update.get("update")
        if update in ("weight", "filtered"):
            return 1.0
        if update == "channels":
            width = self.module.out_channels if self.module.groups > 1 else self.module.in_channels
            return len(self.update["channels"]) / width
        return 0.0


def layer_macs(module, out_shape):
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_output = module.in_channels // module.groups * kh * kw
        return per_output * out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3]
    return module.in_features * out_shape[0] * module.out_features


def forward_layers(model, x):
    """Every conv, linear and activation of ``model`` (as built) in the order the forward runs them,
    each with an empty plan entry (``plan_counts`` gives them the plan's)."""
    order, hooks = [], []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear) + ACTIVATIONS):
            def hook(mod, inputs, output, name=name):
                order.append(Layer(name, mod, tuple(inputs[0].shape), tuple(output.shape), {}))
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model.eval()(x)  # shapes only: BN in eval mode takes any batch and map size
    for h in hooks:
        h.remove()
    return order


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n


def analytic_counts(plan, x):
    """Every count above for ``plan`` on the batch ``x``, from the plan's model as built."""
    torch.manual_seed(plan["seeds"]["init"])
    model = build(plan["model"]["spec"], plan["model"]["num_classes"])
    counts = plan_counts(forward_layers(model, x), plan["update_plan"])
    counts["params"] = sum(p.numel() for p in model.parameters())
    return counts


def plan_counts(structure, update_plan):
    """The counts of ``update_plan`` over ``structure`` (``forward_layers`` of the model without a
    plan), ``params`` aside: plain arithmetic, so a policy can cost many candidate plans quickly."""
    entries = {layer["name"]: layer for layer in update_plan["layers"]}
    counts = dict.fromkeys(("forward_macs", "exact_backward_macs", "tinytrain_macs", "gradfilter_flops",
                            "saved_inputs_fp32", "trainable_params"), 0)
    plan_bytes = int8_bits = 0
    after_trainable = after_trainable_conv = False
    for layer in structure:
        if isinstance(layer.module, ACTIVATIONS):
            if after_trainable:
                plan_bytes += -(-_numel(layer.in_shape[1:]) // 8)
            continue
        layer = replace(layer, update=entries.get(layer.name, {}))
        update = layer.update.get("update")
        conv = isinstance(layer.module, nn.Conv2d)
        fraction = layer.trained_fraction
        weight_grad = round(layer.macs * fraction)
        counts["forward_macs"] += layer.macs
        counts["exact_backward_macs"] += weight_grad + (layer.macs if after_trainable else 0)
        per_sample_in = _numel(layer.in_shape[1:])
        kept = 4 * _filtered_input(layer) if update == "filtered" else round(4 * per_sample_in * fraction)
        if conv:
            after_trainable_conv = after_trainable_conv or update != "frozen"
            if after_trainable_conv:
                counts["tinytrain_macs"] += layer.macs + weight_grad
            counts["gradfilter_flops"] += _gradfilter_flops(layer, weight_grad, after_trainable)
            counts["saved_inputs_fp32"] += kept
        if update != "frozen":
            int8_bits += _int8_bits(layer, per_sample_in, fraction)
            counts["trainable_params"] += _trainable(layer.module, fraction, update_plan["bn"])
        plan_bytes += kept
        after_trainable = after_trainable or update != "frozen"
    counts["plan_fp32"] = plan_bytes if update_plan["bn"] == "fold" else None
    counts["sparseupdate_int8"] = -(-int8_bits // 8)
    return counts


def _patches(layer):
    r = layer.update["patch"]
    return -(-layer.out_shape[2] // r) * -(-layer.out_shape[3] // r)


def _filtered_input(layer):
    """Elements of a filtered conv's pooled input, per sample: C_in * patches."""
    return layer.module.in_channels * _patches(layer)


def _gradfilter_flops(layer, weight_grad_macs, input_grad):
    """A conv's backward FLOPs by the GradFilter paper's formulas (see ``gradfilter_flops``)."""
    if layer.update.get("update") != "filtered":
        return 2 * weight_grad_macs + (2 * layer.macs if input_grad else 0)
    conv, batch, patches = layer.module, layer.out_shape[0], _patches(layer)
    per_group_out = conv.out_channels // conv.groups
    flops = conv.out_channels * (conv.in_channels // conv.groups) * (2 * batch * patches - 1)
    if input_grad:
        flops += batch * patches * conv.in_channels * (2 * per_group_out - 1)
    return flops


def _int8_bits(layer, per_sample_in, fraction):
    """Bits an updated layer needs under the ``sparseupdate_int8`` convention."""
    if isinstance(layer.module, nn.Linear):
        return 8 * per_sample_in  # the classifier's input; its weights are not counted
    mask_and_bias = _numel(layer.out_shape[1:]) + 32 * layer.module.out_channels
    return mask_and_bias + round(8 * fraction * (per_sample_in + layer.module.weight.numel()))


@dataclass(frozen=True)
class Int8Memory:
    """The ``sparseupdate_int8`` bytes of any SparseUpdate scheme of one model, without building
    a plan: per conv its mask-and-bias bits, the elements a trained weight adds (input + weight)
    and its channel width; the classifier's bits. ``scheme_bytes`` equals what ``analytic_counts``
    gives the scheme's plan (tested)."""

    mask_and_bias_bits: tuple
    weight_elements: tuple
    widths: tuple
    classifier_bits: int

    @classmethod
    def of(cls, spec, num_classes, resolution):
        model = build(spec, num_classes)
        layers = forward_layers(model, torch.zeros(1, 3, resolution, resolution))
        convs = [layer for layer in layers if isinstance(layer.module, nn.Conv2d)]
        (classifier,) = [layer for layer in layers if isinstance(layer.module, nn.Linear)]
        return cls(tuple(_numel(c.out_shape[1:]) + 32 * c.module.out_channels for c in convs),
                   tuple(_numel(c.in_shape[1:]) + c.module.weight.numel() for c in convs),
                   tuple(c.module.in_channels if c.module.groups == 1 else c.module.out_channels for c in convs),
                   8 * _numel(classifier.in_shape[1:]))

    def weight_bits(self, index, channels):
        """Bits that training ``channels`` input channels of conv ``index`` adds (its mask and bias
        not included)."""
        return round(8 * channels / self.widths[index] * self.weight_elements[index])

    def scheme_bytes(self, n_bias, weights):
        """Bytes of a scheme: biases of the last ``n_bias`` convs, ``weights`` {conv: channels}."""
        convs = len(self.widths)
        updated = set(range(convs - n_bias, convs)) | set(weights)
        bits = self.classifier_bits + sum(self.mask_and_bias_bits[i] for i in updated)
        bits += sum(self.weight_bits(i, k) for i, k in weights.items() if k)
        return -(-bits // 8)


def _trainable(module, fraction, bn):
    """Parameters trained in an updated layer: the trained fraction of its weight and its bias (a
    folded conv has one), or with BN in train mode a trained conv's BN scale and shift instead."""
    weight = round(module.weight.numel() * fraction)
    if isinstance(module, nn.Linear):
        return weight + module.out_features
    return weight + (module.out_channels if bn == "fold" else 2 * module.out_channels)
