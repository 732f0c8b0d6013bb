"""The stock methods: ``full``, ``last-layer``, ``bias-only`` and ``bp-last-k``.

Each is a policy: ``plan(context, **params)`` returns an UpdatePlan (``context``: a
``PlanContext``). The classifier is trained in
every method. ``full`` trains with BatchNorm in train mode (the standard fine-tuning baseline);
the others fold BN into the conv, so "bias" is the folded bias.
"""
from .update_plan import make_plan


class Method:
    """A named policy with declared parameters ``{name: (type, help)}``, all required."""

    name = ""
    description = ""
    params = {}

    def plan(self, context, **params):
        raise NotImplementedError


def n_convs(layers):
    return sum(1 for layer in layers if layer["kind"] == "conv")


class Full(Method):
    name = "full"
    description = "every parameter trained, BatchNorm in train mode"

    def plan(self, context):
        updates = {i: "weight" for i in range(n_convs(context.layers))}
        updates["classifier"] = "weight"
        return make_plan(context.layers, "train", updates)


class LastLayer(Method):
    name = "last-layer"
    description = "the classifier only; BN folded"

    def plan(self, context):
        return make_plan(context.layers, "fold", {"classifier": "weight"})


class BiasOnly(Method):
    name = "bias-only"
    description = "every conv's folded bias and the classifier (TinyTL-style)"

    def plan(self, context):
        updates = {i: "bias" for i in range(n_convs(context.layers))}
        updates["classifier"] = "weight"
        return make_plan(context.layers, "fold", updates)


class BpLastK(Method):
    name = "bp-last-k"
    description = "exact backprop through the last k convs (every Conv2d in forward order)"
    params = {"k": (int, "how many of the last convs are trained (1..number of convs)")}

    def plan(self, context, k):
        n = n_convs(context.layers)
        if not 1 <= k <= n:
            raise ValueError("bp-last-k: k=%d is out of range; this model has %d convs" % (k, n))
        updates = {i: "weight" for i in range(n - k, n)}
        updates["classifier"] = "weight"
        return make_plan(context.layers, "fold", updates)
