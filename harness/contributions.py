"""Contribution analysis for SparseUpdate (Lin et al., NeurIPS 2022, Sec. 3.2), on the host.

Fine-tunes the pre-trained backbone on a real transfer task once per configuration and scores it
on a validation split carved from the task's training images (the held-out test images stay
untouched, so a searched scheme can be judged on them):

- ``bias[n]``: accuracy of training the last n convs' biases and the classifier, minus the
  classifier alone (n = 0);
- ``weights[(conv, ratio)]``: accuracy of also training that conv's weight on that ratio of its
  input channels (largest L2 norm), on top of every conv's bias, minus every conv's bias alone.

Every configuration runs the same steps, learning rate, batches and classifier initialisation
(per seed; the mean over seeds is kept), with the op library (``ops = "odt"``). The table is cached
in the artifact cache under its recipe and can be written out for ``--table``.
"""
import copy
import json
import logging
import time

import torch

from suites.data import make_batches
from suites.methods import PlanContext, apply_plan, layer_table
from suites.methods.sparse_update import Scheme, scheme_plan
from suites.models import build, spec
from suites.train import Trainer, accuracy

from .executor import load_backbone
from .pretrain import dataset_artifacts, pretrain
from .sparse_search import RATIOS, Contributions

log = logging.getLogger("odt_bench.search")
FORMAT = "odt-bench/sparse-contributions"
VERSION = 1
VALIDATION_PER_CLASS = 40
DATA = ("mnist5k-transfer",)


def split(arrays, per_class=VALIDATION_PER_CLASS, seed=0):
    """``(train, validation)`` array dicts from the task's training images, ``per_class`` of each
    class held out for validation (seeded)."""
    gen = torch.Generator().manual_seed(seed)
    train, val = [], []
    for label in arrays["y_train"].unique().tolist():
        idx = torch.nonzero(arrays["y_train"] == label).flatten()
        idx = idx[torch.randperm(len(idx), generator=gen)]
        val.append(idx[:per_class])
        train.append(idx[per_class:])

    def pick(index):
        index = torch.cat(index)
        return dict(arrays, x_train=arrays["x_train"][index], y_train=arrays["y_train"][index],
                    x_test=arrays["x_train"][index], y_test=arrays["y_train"][index])
    return pick(train), pick(val)


class Analysis:
    """The fine-tuning runs of one contribution table."""

    def __init__(self, model_name, cache, resolution=64, batch=16, steps=100, lr=0.1, seeds=1,
                 candidates=None, depths=None, data="mnist5k-transfer"):
        if data not in DATA:
            raise ValueError("contribution analysis runs on %s, not %r" % (", ".join(DATA), data))
        self.model_name, self.data = model_name, data
        self.resolution, self.batch, self.steps, self.lr, self.seeds = resolution, batch, steps, lr, seeds
        arrays = torch.load(cache.path(dataset_artifacts(cache)["target"]), weights_only=True)
        self.train, self.validation = split(arrays)
        self.num_classes = len(arrays["classes"])
        self.checkpoint = pretrain(model_name, resolution, cache)
        self.state = torch.load(cache.path(self.checkpoint), weights_only=True)
        n = len(layer_table(build(spec(model_name), self.num_classes))) - 1
        self.convs = n
        self.candidates = sorted(candidates) if candidates is not None else list(range(n // 2, n))
        self.depths = sorted(depths) if depths is not None else list(range(n + 1))
        bad = [c for c in self.candidates if not 0 <= c < n] + [d for d in self.depths if not 0 <= d <= n]
        if bad:
            raise ValueError("%s has convs 0 to %d (bias depths 0 to %d): %s is out of range" % (model_name, n - 1, n, bad[0]))

    def recipe(self):
        return {"what": "sparse-contributions", "version": VERSION, "model": self.model_name, "data": self.data,
                "checkpoint": self.checkpoint, "resolution": self.resolution, "batch": self.batch,
                "steps": self.steps, "lr": self.lr, "seeds": self.seeds, "candidates": self.candidates,
                "depths": self.depths, "validation_per_class": VALIDATION_PER_CLASS}

    def _accuracy(self, scheme, seed):
        torch.manual_seed(seed)
        model = build(spec(self.model_name), self.num_classes)
        load_backbone(model, self.state, self.checkpoint[:12])
        plan = scheme_plan(PlanContext(self.model_name, layer_table(model), model), scheme)
        trainer = Trainer(model, apply_plan(model, plan, "odt"), self.lr)
        data_spec = {"kind": "image-transfer", "resolution": self.resolution, "num_classes": self.num_classes}
        batches = make_batches(data_spec, self.batch, seed + 1, self.train)
        for _ in range(self.steps):
            trainer.step(*batches.next())
        return accuracy(model, make_batches(data_spec, self.batch, 0, self.validation).evaluation())

    def mean_accuracy(self, scheme):
        return sum(self._accuracy(scheme, seed) for seed in range(self.seeds)) / self.seeds

    def configurations(self):
        """(key, scheme) of every run: ("bias", n) or ("weight", conv, ratio)."""
        for n in sorted(set(self.depths) | {0, self.convs}):
            yield ("bias", n), Scheme(n, ())
        for conv in self.candidates:
            for ratio in RATIOS:
                yield ("weight", conv, ratio), Scheme(self.convs, ((conv, ratio),))

    def run(self):
        """The contribution table (a JSON-able dict), logging progress with an ETA."""
        runs = list(self.configurations())
        accuracies, started = {}, time.monotonic()
        for i, (key, scheme) in enumerate(runs, 1):
            accuracies[key] = self.mean_accuracy(scheme)
            elapsed = time.monotonic() - started
            log.info("contribution analysis %d/%d %s: accuracy %.4f; %.0f s elapsed, ETA %.0f s", i, len(runs),
                     " ".join(map(str, key)), accuracies[key], elapsed, elapsed / i * (len(runs) - i))
        last_layer, bias_only = accuracies[("bias", 0)], accuracies[("bias", self.convs)]
        return {"format": FORMAT, "version": VERSION, "recipe": self.recipe(),
                "baseline": {"classifier_only": last_layer, "every_bias": bias_only},
                "bias": {str(n): accuracies[("bias", n)] - last_layer for n in self.depths},
                "weights": {"%d:%g" % (conv, ratio): accuracies[("weight", conv, ratio)] - bias_only
                            for conv in self.candidates for ratio in RATIOS}}


def load_table(doc, where):
    """``(Contributions, recipe)`` from a table document; ``ValueError`` naming ``where`` if it is not one."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise ValueError("%s is not an odt-bench contribution table (format %r)" % (where, FORMAT))
    try:
        bias = {int(n): float(v) for n, v in doc["bias"].items()}
        weights = {}
        for key, v in doc["weights"].items():
            conv, ratio = key.split(":")
            weights[(int(conv), float(ratio))] = float(v)
    except (KeyError, ValueError, AttributeError) as exc:
        raise ValueError("%s: malformed contribution table (%s)" % (where, exc))
    if 0 not in bias:
        bias[0] = 0.0
    return Contributions(bias, weights), doc.get("recipe", {})


def cached_table(analysis, cache):
    """The cached table of ``analysis``'s recipe, measured (and cached) if absent."""
    sha = cache.lookup(analysis.recipe())
    if sha:
        return json.loads(cache.path(sha).read_text())
    table = analysis.run()
    sha = cache.put_bytes(json.dumps(table, indent=1, sort_keys=True).encode())
    cache.remember(analysis.recipe(), sha)
    return table
