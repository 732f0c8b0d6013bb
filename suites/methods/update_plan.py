"""The UpdatePlan: what training does to each layer, as plain JSON-able data.

    {"bn": "train" | "fold",
     "layers": [{"name": "stem.conv", "kind": "conv", "index": 0, "update": "frozen"}, ...,
                {"name": "blocks.9.pw1.conv", "kind": "conv", "index": 27, "update": "channels",
                 "channels": [0, 3, 5]}, ...,
                {"name": "classifier", "kind": "linear", "index": null, "update": "weight"}]}

``update`` is one of ``frozen`` (no gradient), ``bias`` (the bias only; with BN folded that is the
folded bias), ``weight`` (weight and bias; with BN in train mode, also that BN's affine
parameters) or ``channels`` (the bias, and the weight on the listed input channels only; for a
depthwise conv, on those channels). Layers are every Conv2d in forward order, then the
classifier. Every method is a policy emitting such a plan; ``apply_plan`` is the one function that
applies it.
"""
from dataclasses import dataclass

UPDATES = ("frozen", "bias", "weight", "channels")
BN_MODES = ("train", "fold")


@dataclass(frozen=True)
class PlanContext:
    """What a method looks at to emit its plan: the model's registry name, its layer table, and
    the model as training starts from it (seeded initialisation, checkpoint loaded, BN unfolded)."""

    model_name: str
    layers: list
    model: object


def layer_table(model):
    """The plan's layer list for ``model`` with every layer frozen: convs in order, classifier last."""
    from torch import nn

    layers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            layers.append({"name": name, "kind": "conv", "index": len(layers), "update": "frozen"})
    layers.append({"name": "classifier", "kind": "linear", "index": None, "update": "frozen"})
    return layers


def make_plan(layers, bn, updates):
    """A plan over ``layers`` with ``updates``: conv index or ``'classifier'`` -> an update name, or
    a list of input channels (a ``channels`` update)."""
    if bn not in BN_MODES:
        raise ValueError("bn mode %r; known: %s" % (bn, BN_MODES))
    out = []
    for layer in layers:
        key = layer["index"] if layer["kind"] == "conv" else layer["name"]
        update = updates.get(key, "frozen")
        if isinstance(update, list):
            out.append(dict(layer, update="channels", channels=sorted(update)))
            continue
        if update not in UPDATES or update == "channels":
            raise ValueError("update %r for layer %s; known: %s (channels: give the channel list)"
                             % (update, layer["name"], ", ".join(UPDATES)))
        out.append(dict(layer, update=update))
    return {"bn": bn, "layers": out}

