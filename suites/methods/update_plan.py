"""The UpdatePlan: what training does to each layer, as plain JSON-able data.

    {"bn": "train" | "fold",
     "layers": [{"name": "stem.conv", "kind": "conv", "index": 0, "update": "frozen"}, ...,
                {"name": "classifier", "kind": "linear", "index": null, "update": "weight"}]}

``update`` is one of ``frozen`` (no gradient), ``bias`` (the bias only; with BN folded that is the
folded bias) or ``weight`` (weight and bias; with BN in train mode, also that BN's affine
parameters). Layers are every Conv2d in forward order, then the classifier. Every method is a
policy emitting such a plan; ``apply_plan`` is the one function that applies it.
"""
UPDATES = ("frozen", "bias", "weight")
BN_MODES = ("train", "fold")


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
    """A plan over ``layers`` with ``updates`` (conv index or ``'classifier'`` -> update)."""
    if bn not in BN_MODES:
        raise ValueError("bn mode %r; known: %s" % (bn, BN_MODES))
    out = []
    for layer in layers:
        key = layer["index"] if layer["kind"] == "conv" else layer["name"]
        update = updates.get(key, "frozen")
        if update not in UPDATES:
            raise ValueError("update %r for layer %s; known: %s" % (update, layer["name"], UPDATES))
        out.append(dict(layer, update=update))
    return {"bn": bn, "layers": out}
