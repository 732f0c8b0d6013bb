"""TinyTrain (Kwon et al., ICML 2024): task-adaptive sparse update under device budgets.

The authors released no code; every choice below is this implementation's, named and exposed:

- **Where the selection runs.** On the device, once per task, from the task's support set (a
  measured phase: ``Execution`` times it against a full forward+backward on the same set). The
  host resolves and checks the budgets first (``TinyTrain.prepare``), since costs depend on the
  model's shapes only; the scores need the data.
- **Fisher potential of a conv's input activation** (the activation it consumes, not its output:
  the paper leaves it open; the input's channels are the ones a channel-subset conv trains and
  keeps, so the selection's savings are real in the op library): one forward of the support set
  (BN in eval mode, every parameter frozen) and one backward of the summed cross-entropy (per-
  sample gradients, Fisher's definition) to every conv's input a, the gradient g being the one
  that reaches a through that conv (a tensor that a residual branch or a second conv also
  consumes is scored per consumer, so ResNet's downsample conv and its block's first conv get
  their own potentials); for each input channel c,
  ``delta_c = 1/(2N) * sum_n (sum_d a[n,d,c] * g[n,d,c])^2`` (d over spatial positions), and the
  layer potential ``P_i = sum_c delta_c``.
- **Score** ``s_i = P_i / ((|W_i| / max |W|) * (M_i / max M))``: |W| the conv's weight elements, M
  its forward MACs, both over every conv of the model (every conv is a candidate, depthwise and
  the stem included).
- **Selection**: convs in decreasing score (ties: earlier conv first); each is tried with its top
  ``max(1, int(ratio * width))`` input channels (depthwise: channels) by the channel
  ``criterion``; it is kept when the plan with it stays within both budgets, else skipped and the
  next is tried. Budgets: backward memory under the ``plan_fp32`` convention (bytes per sample)
  and backward compute under ``tinytrain_macs`` (MACs per sample), as ``suites.counts`` computes
  them for the whole candidate plan (not a sum of per-layer figures: a new early layer also
  makes every ReLU6 mask after it count). Both only grow as layers are added, so a skipped layer
  still does not fit the final plan.
- **Channel criterion** (the paper's ablation): ``fisher`` (largest delta_c), ``l2-norm`` (largest
  L2 norm of the BN-folded weight's input-channel slice, as SparseUpdate), ``random``
  (``random.Random(seed * 100003 + conv index)``). Layers are ranked by the Fisher score in all
  three.
- **Updates**: a chosen conv trains its bias and the weight on its chosen channels (a ``channels``
  update, ``ChannelConv2d`` with ``ops = "odt"``); the classifier is trained; BN is folded; every
  other layer is frozen.

Budgets are given as text: a size or count with its unit (``120KiB``, ``6.5MMAC``), or
``sparse-update:<preset>``, optionally scaled (``0.6*sparse-update:99kb``): that figure of the
model's SparseUpdate preset at the job's resolution (so the two compare at equal memory, or at a
stated fraction of its compute).
"""
import copy
import random
import re

import torch
import torch.nn.functional as F

from .. import models
from ..counts import forward_layers, layer_macs, plan_counts
from ..quantities import parse_bytes, parse_macs
from .apply import fold_batchnorm
from .sparse_update import load_scheme, scheme_plan, top_channels
from .stock import Method, n_convs
from .update_plan import make_plan

CRITERIA = ("fisher", "l2-norm", "random")
BUDGETS = (("memory", "plan_fp32", parse_bytes, "bytes"), ("compute", "tinytrain_macs", parse_macs, "MAC"))
"""(parameter, the convention it is counted under, its parser, unit)."""


def structure(model, resolution, device="cpu"):
    """The model's layers with their shapes for one sample (``suites.counts.forward_layers``)."""
    return forward_layers(model, torch.zeros(1, 3, resolution, resolution, device=device))


def _width(conv):
    return conv.out_channels if conv.groups > 1 else conv.in_channels


def channel_count(conv, ratio):
    return max(1, int(_width(conv) * ratio))


class TinyTrain(Method):
    name = "tinytrain"
    description = ("TinyTrain (ICML 2024): convs ranked by Fisher potential per parameter and MAC, chosen on "
                   "the device from the support set under memory and compute budgets; top channels")
    on_device = True
    params = {"memory": (str, "backward-memory budget per sample (plan_fp32): a size like 120KiB, or "
                              "[<factor>*]sparse-update:<preset> for (a fraction of) that preset's plan_fp32"),
              "compute": (str, "backward-compute budget per sample (tinytrain_macs): a count like 6.5MMAC, "
                               "or [<factor>*]sparse-update:<preset>"),
              "ratio": (float, "fraction of a chosen conv's input channels trained (0 < ratio <= 1)"),
              "criterion": (str, "channel criterion: %s" % ", ".join(CRITERIA))}

    def prepare(self, context, memory, compute, ratio, criterion):
        """The selection's parameters with the budgets resolved to numbers, checked on the host:
        a ratio outside (0, 1], an unknown criterion, a budget below what the classifier alone
        needs or too small for every conv are errors naming the parameter."""
        if not 0 < ratio <= 1:
            raise ValueError("tinytrain: ratio must be in (0, 1], got %r" % ratio)
        if criterion not in CRITERIA:
            raise ValueError("tinytrain: criterion %r; known: %s" % (criterion, ", ".join(CRITERIA)))
        if context.resolution is None:
            raise ValueError("tinytrain: budgets are counted at the job's resolution, and none was given")
        layers = structure(context.model, context.resolution)
        given = {"memory": memory, "compute": compute}
        budgets = {param: _budget(context, layers, param, given[param], convention, parse)
                   for param, convention, parse, _ in BUDGETS}
        base = plan_counts(layers, make_plan(context.layers, "fold", {"classifier": "weight"}))
        for param, convention, _, unit in BUDGETS:
            if base[convention] > budgets[param]:
                raise ValueError("tinytrain: %s budget %s (%d %s) is below the %d %s that training the classifier "
                                 "alone needs (%s)" % (param, given[param], budgets[param], unit, base[convention],
                                                       unit, convention))
        if not any(_fits(_with(layers, context.layers, {}, i, list(range(channel_count(conv, ratio)))), budgets)
                   for i, conv in enumerate(models.convs(context.model))):
            raise ValueError("tinytrain: no conv fits the budgets (memory %s, compute %s) with ratio %g of its "
                             "channels; raise a budget or lower the ratio" % (memory, compute, ratio))
        return {"memory": memory, "compute": compute, "memory_bytes": budgets["memory"],
                "compute_macs": budgets["compute"], "ratio": ratio, "criterion": criterion}

    def plan(self, context, memory, compute, ratio, criterion):
        raise ValueError("tinytrain chooses its layers on the device from the task's support set; "
                         "compile the job and run it (Execution runs the selection)")


RELATIVE = re.compile(r"\s*(?:([0-9]*\.?[0-9]+)\s*\*\s*)?sparse-update:(\S+)\s*")


def _budget(context, layers, param, text, convention, parse):
    relative = RELATIVE.fullmatch(text)
    if relative:
        factor, preset = float(relative.group(1) or 1), relative.group(2)
        plan = scheme_plan(context, load_scheme(context.model_name, preset))
        return int(factor * plan_counts(layers, plan)[convention])
    try:
        return parse(text, "tinytrain %s budget" % param)
    except ValueError as exc:
        raise ValueError("%s (or [<factor>*]sparse-update:<preset>)" % exc)


def _with(layers, table, chosen, index, channels):
    """The counts of the plan training ``chosen`` ({conv: channels}) plus ``index`` on ``channels``."""
    updates = dict(chosen, classifier="weight")
    updates[index] = channels
    return plan_counts(layers, make_plan(table, "fold", updates))


def _fits(counts, budgets):
    return counts["plan_fp32"] <= budgets["memory"] and counts["tinytrain_macs"] <= budgets["compute"]


def fisher_potentials(model, x, y):
    """``[delta]``: per conv (forward order) the Fisher potential of each channel of its input
    activation over the batch ``(x, y)`` (see the module docstring); the model is left as found."""
    convs = models.convs(model)
    inputs = [None] * len(convs)

    def keep(i):
        def hook(module, args):  # the conv consumes an alias, so its gradient is this conv's share only
            inputs[i] = args[0].view_as(args[0])
            return (inputs[i],) + tuple(args[1:])
        return hook

    hooks = [conv.register_forward_pre_hook(keep(i)) for i, conv in enumerate(convs)]
    flags = [(p, p.requires_grad) for p in model.parameters()]
    training = model.training
    try:
        for p, _ in flags:
            p.requires_grad_(False)
        model.eval()
        loss = F.cross_entropy(model(x.detach().requires_grad_(True)), y, reduction="sum")
        grads = torch.autograd.grad(loss, inputs)
    finally:
        for h in hooks:
            h.remove()
        for p, flag in flags:
            p.requires_grad_(flag)
        model.train(training)
    return [((a.detach() * g).sum((2, 3)) ** 2).sum(0).div(2 * x.shape[0]) for a, g in zip(inputs, grads)]


def _channels(criterion, conv, folded, delta, ratio, seed, index):
    count = channel_count(conv, ratio)
    if criterion == "fisher":
        return sorted(torch.sort(delta, descending=True, stable=True).indices[:count].tolist())
    if criterion == "l2-norm":
        return top_channels(folded.weight.detach(), ratio, conv.groups > 1)
    return sorted(random.Random(seed * 100003 + index).sample(range(_width(conv)), count))


def select(context, x, y, params, seed):
    """TinyTrain's selection on the support set ``(x, y)``: the record with the ``update_plan``,
    every conv's potential, score, channels and outcome (``chosen``, or which budget it broke),
    and the plan's counts against the budgets."""
    model = context.model
    convs = models.convs(model)
    layers = structure(model, context.resolution, x.device)
    shapes = {layer.name: layer.out_shape for layer in layers}
    names = [entry["name"] for entry in context.layers[:n_convs(context.layers)]]
    deltas = fisher_potentials(model, x, y)
    sizes = [conv.weight.numel() for conv in convs]
    macs = [layer_macs(conv, shapes[name]) for conv, name in zip(convs, names)]
    potentials = [float(d.sum()) for d in deltas]
    scores = [p / ((w / max(sizes)) * (m / max(macs))) for p, w, m in zip(potentials, sizes, macs)]
    folded = models.convs(fold_batchnorm(copy.deepcopy(model))) if params["criterion"] == "l2-norm" else convs
    budgets = {"memory": params["memory_bytes"], "compute": params["compute_macs"]}
    chosen, outcome = {}, {}
    for i in sorted(range(len(convs)), key=lambda i: (-scores[i], i)):
        channels = _channels(params["criterion"], convs[i], folded[i], deltas[i], params["ratio"], seed, i)
        counts = _with(layers, context.layers, chosen, i, channels)
        if _fits(counts, budgets):
            chosen[i] = channels
            outcome[i] = ("chosen", channels)
        else:
            broke = "memory" if counts["plan_fp32"] > budgets["memory"] else "compute"
            outcome[i] = ("over " + broke, channels)
    update_plan = make_plan(context.layers, "fold", dict(chosen, classifier="weight"))
    final = plan_counts(layers, update_plan)
    return {
        "policy": "tinytrain", "params": params, "update_plan": update_plan,
        "convs": [{"index": i, "name": names[i], "potential": potentials[i], "score": scores[i],
                   "params": sizes[i], "macs": macs[i], "outcome": outcome[i][0], "channels": outcome[i][1]}
                  for i in range(len(convs))],
        "chosen": sorted(chosen),
        "counts": {"plan_fp32": final["plan_fp32"], "tinytrain_macs": final["tinytrain_macs"]},
    }


def full_forward_backward(model, x, y):
    """One forward and backward of every parameter on ``(x, y)`` (BN in eval mode, as the
    selection's pass), gradients released after: the reference the selection's cost is held to."""
    training = model.training
    model.eval()
    F.cross_entropy(model(x), y).backward()
    model.train(training)
    for p in model.parameters():
        p.grad = None
