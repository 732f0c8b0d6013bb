"""Gradient filtering (Yang et al., "Efficient On-Device Training via Gradient Filtering", CVPR
2023) as a policy: the last ``k`` convs (every Conv2d in forward order, downsample convs
included) and the classifier trained, each of those convs with its output gradient filtered over
``patch`` x ``patch`` patches (``suites.ops.FilteredConv2d``); everything earlier frozen and not
back-propagated; BN folded (the paper freezes BN). Needs ``ops = "odt"``.

``gradfilter-compact`` is the same plan with the compact weight update of ``FilteredConv2d``:
each filtered conv trains one value per (out, in) pair, which is all its filtered weight
gradient holds, and folds it into the weight after the step, so no full-size weight gradient is
ever written (the same updates under SGD).
"""
import torch

from ..models import convs
from ..ops.filtered import check_filterable, patch_fits
from .stock import Method, n_convs
from .update_plan import make_plan


class GradFilter(Method):
    name = "gradfilter"
    description = "the last k convs trained with gradient filtering of patch r (CVPR 2023); BN folded"
    params = {"k": (int, "how many of the last convs are trained (1..number of convs)"),
              "patch": (int, "patch size r >= 1 of the filter (the paper uses 2, 4, 7)")}
    layer_fields = {}  # what each filtered conv's plan entry holds besides update and patch

    def plan(self, context, k, patch):
        n = n_convs(context.layers)
        if not 1 <= k <= n:
            raise ValueError("%s: k=%d is out of range; this model has %d convs" % (self.name, k, n))
        chosen = range(n - k, n)
        modules = convs(context.model)
        for i in chosen:
            try:
                check_filterable(modules[i], patch)
            except ValueError as exc:
                raise ValueError("%s: conv %d (%s): %s" % (self.name, i, context.layers[i]["name"], exc))
        if context.resolution is not None:
            _check_patch(self.name, context, modules, chosen, patch)
        updates = {i: dict({"update": "filtered", "patch": patch}, **self.layer_fields) for i in chosen}
        updates["classifier"] = "weight"
        return make_plan(context.layers, "fold", updates)


class GradFilterCompact(GradFilter):
    name = "gradfilter-compact"
    description = ("gradfilter whose filtered convs train one weight value per (out, in) pair, folded into "
                   "the weight after each step: no full-size weight gradient (the same SGD updates)")
    layer_fields = {"compact": True}


def _check_patch(method, context, modules, chosen, patch):
    """The patch must fit every filtered conv's output map at the job's resolution."""
    sizes = {}
    hooks = [modules[i].register_forward_hook(lambda m, inputs, out, i=i: sizes.__setitem__(i, out.shape[2:]))
             for i in chosen]
    with torch.no_grad():
        context.model.eval()(torch.zeros(1, 3, context.resolution, context.resolution))  # RGB images
    for h in hooks:
        h.remove()
    for i in chosen:
        problem = patch_fits(patch, tuple(sizes[i]))
        if problem:
            raise ValueError("%s: conv %d (%s) at resolution %d: %s"
                             % (method, i, context.layers[i]["name"], context.resolution, problem))
