"""Model registry: architecture specs by name, and building a ``torch.nn`` model from a spec.

A spec is plain JSON-able data (see ``tiny_models.json`` and ``paper_models.json``) so that it can
travel inside an ExecutionPlan; ``build(spec, num_classes)`` is what a device runs to get the model.
"""
import json
import os

from .mbconv import MBConvNet, convs
from .resnet import ResNet
from .single_conv import SingleConv

_HERE = os.path.dirname(__file__)
_TINY = os.path.join(_HERE, "tiny_models.json")
_PAPER = os.path.join(_HERE, "paper_models.json")
_BUILDERS = {"mbconv": MBConvNet, "resnet": ResNet, "conv": SingleConv}


class UnknownModel(KeyError):
    def __str__(self):
        return self.args[0]


def _load(path):
    with open(path) as f:
        return json.load(f)


def _tiny():
    return _load(_TINY)


def _registered(key):
    """``key`` ("models" or "published_counts") of both files, merged by model name."""
    merged = dict(_tiny()[key])
    merged.update(_load(_PAPER)[key])
    return merged


def names():
    """Registered model names, sorted."""
    return sorted(_registered("models"))


def spec(name):
    """The architecture spec of model ``name`` (a fresh dict, with its ``family``)."""
    models = _registered("models")
    if name not in models:
        raise UnknownModel("unknown model %r; known models: %s" % (name, ", ".join(sorted(models))))
    return dict(models[name], family=models[name].get("family", "mbconv"), name=name)


def published_counts(name):
    """Published sizes of model ``name`` and where they come from; {} for the micro-benchmarks."""
    return _registered("published_counts").get(name, {})


def sparse_update_schemes(name):
    """The SparseUpdate authors' released schemes for model ``name``: ``{label: scheme dict}``
    (``n_bias_update``, ``manual_weight_idx``, ``weight_update_ratio``); {} for other models."""
    schemes = _tiny()["sparse_update_schemes"].get(name, {})
    return {label: dict(scheme) for label, scheme in schemes.items() if not label.startswith("_")}


def build(model_spec, num_classes):
    """Build the ``nn.Module`` described by ``model_spec`` with a ``num_classes`` classifier."""
    family = model_spec.get("family")
    if family not in _BUILDERS:
        raise ValueError("model spec has unknown family %r; known: %s" % (family, sorted(_BUILDERS)))
    return _BUILDERS[family](model_spec, num_classes)


__all__ = ["build", "convs", "names", "spec", "published_counts", "sparse_update_schemes", "UnknownModel"]
