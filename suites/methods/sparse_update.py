"""SparseUpdate (Lin et al., "On-Device Training Under 256KB Memory", NeurIPS 2022) as a policy.

The update space, as the paper defines it: the biases of the last ``n_bias_update`` convs; the
weights of chosen convs (``manual_weight_idx``, conv index over every Conv2d in forward order),
each on a ratio of its input channels (depthwise: of its channels) from {0, 1/8, 1/4, 1/2, 1}
(``weight_update_ratio``; 0 means its bias only); the channels with the largest L2 weight norm
(of the BN-folded weight, as the int8 model the authors select on); the classifier always.
BN is folded; everything before the earliest updated conv is frozen and not back-propagated.

A scheme is named by a preset: one of the authors' released labels for the model (``99kb`` …,
which differ per model; see ``tiny_models.json``), or a preset file as ``odt-bench search-sparse``
writes it (JSON, the same three keys plus provenance).
"""
import copy
import json
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from suites import models

from .apply import fold_batchnorm
from .stock import Method, n_convs
from .update_plan import make_plan

RATIOS = (0.0, 0.125, 0.25, 0.5, 1.0)
PRESET_FORMAT = "odt-bench/sparse-update-preset"
SCHEME_KEYS = ("n_bias_update", "manual_weight_idx", "weight_update_ratio")


class SchemeError(ValueError):
    """A preset or scheme is not valid for the model; the message names what and where."""


@dataclass(frozen=True)
class Scheme:
    """``n_bias``: biases of the last n convs; ``weights``: ((conv index, ratio), ...)."""

    n_bias: int
    weights: tuple

    @classmethod
    def from_dict(cls, doc, where):
        missing = [k for k in SCHEME_KEYS if k not in doc]
        if missing:
            raise SchemeError("%s: missing %s" % (where, ", ".join(missing)))
        indices, ratios = doc["manual_weight_idx"], doc["weight_update_ratio"]
        if len(indices) != len(ratios):
            raise SchemeError("%s: %d conv indices but %d ratios" % (where, len(indices), len(ratios)))
        return cls(doc["n_bias_update"], tuple(zip(indices, ratios)))

    def to_dict(self):
        return {"n_bias_update": self.n_bias, "manual_weight_idx": [i for i, _ in self.weights],
                "weight_update_ratio": [r for _, r in self.weights]}

    def check(self, convs, where):
        """Raise ``SchemeError`` unless the scheme fits a model of ``convs`` convs."""
        if not isinstance(self.n_bias, int) or isinstance(self.n_bias, bool) or not 0 <= self.n_bias <= convs:
            raise SchemeError("%s: n_bias_update must be an integer from 0 to %d (the model's convs), got %r"
                              % (where, convs, self.n_bias))
        seen = set()
        for index, ratio in self.weights:
            if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < convs:
                raise SchemeError("%s: conv %r does not exist; the model has convs 0 to %d" % (where, index, convs - 1))
            if index in seen:
                raise SchemeError("%s: conv %d is listed twice" % (where, index))
            seen.add(index)
            if ratio not in RATIOS:
                raise SchemeError("%s: conv %d has ratio %r; ratios are %s" % (
                    where, index, ratio, ", ".join(str(Fraction(r)) for r in RATIOS)))


def load_scheme(model_name, preset):
    """The scheme a preset names for ``model_name``: a released label or a preset file."""
    released = models.sparse_update_schemes(model_name)
    if preset in released:
        return Scheme.from_dict(released[preset], "preset %r of %s" % (preset, model_name))
    path = Path(preset)
    if path.suffix != ".json" or not path.is_file():
        raise SchemeError("unknown preset %r for %s: the released presets are %s, or give a preset file "
                          "(.json, as odt-bench search-sparse writes)" % (preset, model_name, ", ".join(released) or "none"))
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise SchemeError("preset file %s cannot be read as JSON: %s" % (path, exc))
    if not isinstance(doc, dict) or doc.get("format") != PRESET_FORMAT:
        raise SchemeError("preset file %s is not an odt-bench sparse-update preset (format %r)" % (path, PRESET_FORMAT))
    if doc.get("model") != model_name:
        raise SchemeError("preset file %s is for model %r, not %r" % (path, doc.get("model"), model_name))
    return Scheme.from_dict(doc, "preset file %s" % path)


def top_channels(weight, ratio, depthwise):
    """The ``ratio`` of input channels (depthwise: channels) with the largest L2 weight norm."""
    dim = 0 if depthwise else 1
    width = weight.shape[dim]
    norms = weight.transpose(0, dim).reshape(width, -1).norm(dim=1)
    count = max(1, int(width * ratio))
    return sorted(norms.argsort(descending=True, stable=True)[:count].tolist())


def scheme_plan(context, scheme):
    """The UpdatePlan of ``scheme`` on the model of ``context``."""
    convs = n_convs(context.layers)
    scheme.check(convs, "sparse-update scheme")
    folded = models.convs(fold_batchnorm(copy.deepcopy(context.model)))
    updates = {i: "bias" for i in range(convs - scheme.n_bias, convs)}
    for index, ratio in scheme.weights:
        conv = folded[index]
        if ratio == 0:
            updates[index] = "bias"
        elif ratio == 1:
            updates[index] = "weight"
        else:
            updates[index] = top_channels(conv.weight.detach(), ratio, conv.groups > 1)
    updates["classifier"] = "weight"
    return make_plan(context.layers, "fold", updates)


class SparseUpdate(Method):
    name = "sparse-update"
    description = ("SparseUpdate (NeurIPS 2022): last-n biases, chosen convs on a ratio of their input "
                   "channels (largest L2 norm), classifier; BN folded")
    params = {"preset": (str, "a released scheme of the model (e.g. 99kb; odt-bench list models lists "
                              "them) or a preset file from odt-bench search-sparse")}

    def plan(self, context, preset):
        return scheme_plan(context, load_scheme(context.model_name, preset))
