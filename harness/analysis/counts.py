"""Analytic counts from the model's structure and the plan, each under a named convention.

Conventions (all for one batch of B):
- ``forward_macs``: conv and linear multiply-accumulates of one forward.
- ``exact_backward_macs``: what an exact backward computes: a layer's weight gradient (as many
  MACs as its forward) when its weight is trained, and its input gradient (as many again) when any
  trainable parameter lies before it in forward order. BN and elementwise work are not counted.
- ``saved_inputs_fp32``: fp32 bytes of the inputs that the convs whose weights are trained must
  keep for their weight gradients; classifier excluded (the GradFilter paper's Table 2 convention).
"""
import torch
from torch import nn


def layer_shapes(model, x):
    """``{module name: (input shape, output shape)}`` for every conv and linear, from one forward."""
    shapes, hooks = {}, []
    for name, module in model.named_modules():
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            def hook(mod, inputs, output, name=name):
                shapes[name] = (tuple(inputs[0].shape), tuple(output.shape))
            hooks.append(module.register_forward_hook(hook))
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes


def layer_macs(module, out_shape):
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        per_output = module.in_channels // module.groups * kh * kw
        return per_output * out_shape[0] * out_shape[1] * out_shape[2] * out_shape[3]
    return module.in_features * out_shape[0] * module.out_features


def analytic_counts(model, plan, x):
    modules = dict(model.named_modules())
    shapes = layer_shapes(model, x)
    forward = backward = saved_inputs = 0
    after_trainable = False
    for layer in plan["update_plan"]["layers"]:
        module = modules[layer["name"]]
        in_shape, out_shape = shapes[layer["name"]]
        macs = layer_macs(module, out_shape)
        forward += macs
        if layer["update"] == "weight":
            backward += macs
            if layer["kind"] == "conv":
                saved_inputs += 4 * _numel(in_shape)
        if after_trainable:
            backward += macs
        after_trainable = after_trainable or layer["update"] != "frozen"
    params = sum(p.numel() for p in model.parameters())
    trainable_params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"params": params, "trainable_params": trainable_params, "forward_macs": forward,
            "exact_backward_macs": backward, "saved_inputs_fp32": saved_inputs}


def _numel(shape):
    n = 1
    for d in shape:
        n *= d
    return n
