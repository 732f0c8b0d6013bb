"""Apply an UpdatePlan to a model: fold BN where the plan says so, set what requires grad, and
with ``ops = "odt"`` put the op library's layers in place.

- ``stock``: plain torch layers. Autograd back-propagates nothing before the earliest trainable
  parameter (no input needs a gradient there), but saves what its ops always save, and a
  ``channels`` update is the authors' PyTorch way: the full weight gradient is computed, then the
  other channels are zeroed (a gradient hook).
- ``odt``: frozen and bias-only convs become ``FrozenConv2d`` (no input saved), ``channels``
  updates ``ChannelConv2d`` (only the chosen input channels saved and differentiated),
  ``filtered`` updates ``FilteredConv2d`` (only the pooled input saved), every ReLU6 and ReLU
  keeps a 1-bit mask. Convs whose whole weight is trained stay stock. A conv's ReLU6 runs inside
  the conv's op when its owner is a conv unit: a module with ``conv``, ``bn`` and ``act``
  attributes computing ``act(bn(conv(x)))`` (the models' ``ConvBN``), BN folded; any other ReLU6
  becomes a ``MaskedReLU6``, every ReLU a ``MaskedReLU``. A ``filtered`` update exists only here:
  stock PyTorch has no filtered conv.
"""
import torch
from torch import nn

from ..ops import ChannelConv2d, FilteredConv2d, FrozenConv2d, MaskedReLU, MaskedReLU6

OPS = ("stock", "odt")


def _conv_bn_pairs(model):
    """(conv, bn, owner) for every module that holds a ``conv`` followed by a ``bn``."""
    for module in model.modules():
        conv, bn = getattr(module, "conv", None), getattr(module, "bn", None)
        if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d):
            yield conv, bn, module


@torch.no_grad()
def fold_batchnorm(model):
    """Fold every BN into its conv (scaled weight, new bias) and replace the BN by Identity;
    returns ``model``."""
    for conv, bn, owner in list(_conv_bn_pairs(model)):
        scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
        conv.weight.mul_(scale.reshape(-1, 1, 1, 1))
        bias = bn.bias - bn.running_mean * scale
        if conv.bias is not None:
            bias = bias + conv.bias * scale
        conv.bias = nn.Parameter(bias.clone())
        owner.bn = nn.Identity()
    return model


def _replace(model, name, module):
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _channel_mask(conv, channels):
    """A weight-shaped 0/1 mask keeping ``channels`` (input channels; depthwise: channels)."""
    mask = torch.zeros_like(conv.weight)
    index = torch.tensor(channels)
    if conv.groups > 1:
        mask[index] = 1
    else:
        mask[:, index] = 1
    return mask


def _stock(module, layer, bn):
    if module.bias is not None:
        module.bias.requires_grad_(True)
    if layer["update"] in ("weight", "channels"):
        module.weight.requires_grad_(True)
        if bn is not None:
            bn.weight.requires_grad_(True)
            bn.bias.requires_grad_(True)
    if layer["update"] == "channels":
        mask = _channel_mask(module, layer["channels"])
        module.weight.register_hook(lambda grad: grad * mask)


def _fusable_activation(model, name):
    """The owner of conv ``name`` if it is a conv unit whose activation (a ReLU6 after a folded BN)
    the conv's op can apply; else None."""
    parent = name.rpartition(".")[0]
    owner = model.get_submodule(parent) if parent else model
    if isinstance(getattr(owner, "act", None), nn.ReLU6) and isinstance(getattr(owner, "bn", None), nn.Identity):
        return owner
    return None


def _odt(model, module, layer, bn):
    if layer["update"] == "weight":
        _stock(module, layer, bn)
        return
    if layer["update"] == "filtered":
        for p in module.parameters():
            p.requires_grad_(True)
        _replace(model, layer["name"], FilteredConv2d.from_conv(module, layer["patch"], layer.get("compact", False)))
        return
    if layer["kind"] != "conv":
        if layer["update"] == "bias" and module.bias is not None:
            module.bias.requires_grad_(True)
        return
    owner = _fusable_activation(model, layer["name"])
    if layer["update"] == "channels":
        replacement = ChannelConv2d(module, layer["channels"], relu6=owner is not None)
    else:
        replacement = FrozenConv2d(module, train_bias=layer["update"] == "bias", relu6=owner is not None)
    _replace(model, layer["name"], replacement)
    if owner is not None:
        owner.act = nn.Identity()


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
        if layer["update"] == "frozen" and ops == "stock":
            continue
        if module.bias is None and plan["bn"] == "train" and layer["update"] in ("bias", "channels", "filtered"):
            raise ValueError("layer %s: a %s update needs BN folded (bn='fold')" % (layer["name"], layer["update"]))
        if layer["update"] == "filtered" and ops != "odt":
            raise ValueError("layer %s: a filtered update needs ops 'odt' (stock PyTorch has no filtered conv)"
                             % layer["name"])
        bn = bn_of.get(id(module)) if plan["bn"] == "train" else None
        if ops == "odt":
            _odt(model, module, layer, bn)
        else:
            _stock(module, layer, bn)
    if ops == "odt":
        for name, module in list(model.named_modules()):
            if isinstance(module, nn.ReLU6):
                _replace(model, name, MaskedReLU6())
            elif isinstance(module, nn.ReLU):
                _replace(model, name, MaskedReLU())
    model.train()
    return [p for p in model.parameters() if p.requires_grad]
