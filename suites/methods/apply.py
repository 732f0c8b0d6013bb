"""Apply an UpdatePlan to a model: fold BN where the plan says so, set what requires grad.

Stock autograd then back-propagates nothing before the earliest trainable parameter (no input
needs a gradient there), which is the graph pruning every method relies on.
"""
import torch
from torch import nn

OPS = ("stock",)


def _conv_bn_pairs(model):
    """(conv, bn, owner) for every module that holds a ``conv`` followed by a ``bn``."""
    for module in model.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            yield conv, bn, module


@torch.no_grad()
def fold_batchnorm(model):
    """Fold every BN into its conv (scaled weight, new bias) and replace the BN by Identity."""
    for conv, bn, owner in list(_conv_bn_pairs(model)):
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        conv.bias = nn.Parameter(bias.clone())
        owner.bn = nn.Identity()


def apply_plan(model, plan, ops="stock"):
    """Prepare ``model`` in place for training under ``plan``; returns the trainable parameters."""
    if ops not in OPS:
        raise ValueError("unknown ops %r; known: %s" % (ops, ", ".join(OPS)))
    bn_of = {id(conv): bn for conv, bn, _ in _conv_bn_pairs(model)}
    if plan["bn"] == "fold":
        fold_batchnorm(model)
    modules = dict(model.named_modules())
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in plan["layers"]:
        if layer["name"] not in modules:
            raise ValueError("update plan names layer %r, which the model does not have" % layer["name"])
        module = modules[layer["name"]]
        if layer["update"] == "frozen":
            continue
        if module.bias is None and plan["bn"] == "train" and layer["update"] == "bias":
            raise ValueError("layer %s: a bias update needs BN folded (bn='fold')" % layer["name"])
        if module.bias is not None:
            module.bias.requires_grad_(True)
        if layer["update"] == "weight":
            module.weight.requires_grad_(True)
            bn = bn_of.get(id(module))
            if plan["bn"] == "train" and bn is not None:
                bn.weight.requires_grad_(True)
                bn.bias.requires_grad_(True)
    model.train()
    return [p for p in model.parameters() if p.requires_grad]
