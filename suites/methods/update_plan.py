"""The UpdatePlan: what training does to each layer, as plain JSON-able data.

    {"bn": "train" | "fold",
     "layers": [{"name": "stem.conv", "kind": "conv", "index": 0, "update": "frozen"}, ...,
                {"name": "blocks.9.pw1.conv", "kind": "conv", "index": 27, "update": "channels",
                 "channels": [0, 3, 5]}, ...,
                {"name": "classifier", "kind": "linear", "index": null, "update": "weight"}]}

``update`` is one of ``frozen`` (no gradient), ``bias`` (the bias only; with BN folded that is the
folded bias), ``weight`` (weight and bias; with BN in train mode, also that BN's affine
parameters), ``channels`` (the bias, and the weight on the listed input channels only; for a
depthwise conv, on those channels) or ``filtered`` (weight and bias, the backward gradient-
filtered over ``patch`` x ``patch`` patches: ``{"update": "filtered", "patch": 2}``; BN folded;
``"compact": true`` trains the weight through one value per (out, in) pair, ``FilteredConv2d``'s
compact update). Layers are every Conv2d in forward order, then the
classifier. Every method is a policy emitting such a plan; ``apply_plan`` is the one function that
applies it.
"""
from dataclasses import dataclass
from typing import Optional

UPDATES = ("frozen", "bias", "weight", "channels", "filtered")
BN_MODES = ("train", "fold")


@dataclass(frozen=True)
class PlanContext:
    """What a method looks at to emit its plan: the model's registry name, its layer table, the
    model as training starts from it (seeded initialisation, checkpoint loaded, BN unfolded) and
    the input resolution (None where no job gives one)."""

    model_name: str
    layers: list
    model: object
    resolution: Optional[int] = None


def layer_table(model):
    """The plan's layer list for ``model`` with every layer frozen: convs in order, classifier last."""
    from torch import nn

    layers = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            layers.append({"name": name, "kind": "conv", "index": len(layers), "update": "frozen"})
    layers.append({"name": "classifier", "kind": "linear", "index": None, "update": "frozen"})
    return layers


def _filtered(update):
    """Whether ``update`` is ``{"update": "filtered", "patch": <int>}``, optionally with ``"compact": True``."""
    return (update.get("update") == "filtered" and isinstance(update.get("patch"), int)
            and set(update) <= {"update", "patch", "compact"} and update.get("compact", True) is True)


def make_plan(layers, bn, updates):
    """A plan over ``layers`` with ``updates``: conv index or ``'classifier'`` -> an update name, a
    list of input channels (a ``channels`` update) or ``{"update": "filtered", "patch": r}`` (with
    ``"compact": True`` for the compact weight update)."""
    if bn not in BN_MODES:
        raise ValueError("bn mode %r; known: %s" % (bn, BN_MODES))
    out = []
    for layer in layers:
        key = layer["index"] if layer["kind"] == "conv" else layer["name"]
        update = updates.get(key, "frozen")
        if isinstance(update, list):
            out.append(dict(layer, update="channels", channels=sorted(update)))
            continue
        if isinstance(update, dict):
            if layer["kind"] != "conv" or not _filtered(update):
                raise ValueError("update %r for layer %s: only convs take a dict update, "
                                 "{'update': 'filtered', 'patch': <int>} or with 'compact': True"
                                 % (update, layer["name"]))
            out.append(dict(layer, **update))
            continue
        if update not in UPDATES or update in ("channels", "filtered"):
            raise ValueError("update %r for layer %s; known: %s (channels: give the channel list; "
                             "filtered: {'update': 'filtered', 'patch': r})"
                             % (update, layer["name"], ", ".join(UPDATES)))
        out.append(dict(layer, update=update))
    return {"bn": bn, "layers": out}

