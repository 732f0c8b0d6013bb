"""The stock methods: ``full``, ``last-layer``, ``bias-only`` and ``bp-last-k``.

Each is a policy: ``plan(layers, **params)`` returns an UpdatePlan. The classifier is trained in
every method. ``full`` trains with BatchNorm in train mode (the standard fine-tuning baseline);
the others fold BN into the conv, so "bias" is the folded bias.
"""
from .update_plan import make_plan


class Method:
    """A named policy with declared parameters ``{name: (type, help)}``, all required."""

    name = ""
    description = ""
    params = {}

    def plan(self, layers, **params):
        raise NotImplementedError


def _n_convs(layers):
    return sum(1 for layer in layers if layer["kind"] == "conv")


class Full(Method):
    name = "full"
    description = "every parameter trained, BatchNorm in train mode"

    def plan(self, layers):
        updates = {i: "weight" for i in range(_n_convs(layers))}
        updates["classifier"] = "weight"
        return make_plan(layers, "train", updates)


class LastLayer(Method):
    name = "last-layer"
    description = "the classifier only; BN folded"

    def plan(self, layers):
        return make_plan(layers, "fold", {"classifier": "weight"})


class BiasOnly(Method):
    name = "bias-only"
    description = "every conv's folded bias and the classifier (TinyTL-style)"

    def plan(self, layers):
        updates = {i: "bias" for i in range(_n_convs(layers))}
        updates["classifier"] = "weight"
        return make_plan(layers, "fold", updates)


class BpLastK(Method):
    name = "bp-last-k"
    description = "exact backprop through the last k convs (every Conv2d in forward order)"
    params = {"k": (int, "how many of the last convs are trained (1..number of convs)")}

    def plan(self, layers, k):
        n = _n_convs(layers)
        if not 1 <= k <= n:
            raise ValueError("bp-last-k: k=%d is out of range; this model has %d convs" % (k, n))
        updates = {i: "weight" for i in range(n - k, n)}
        updates["classifier"] = "weight"
        return make_plan(layers, "fold", updates)
