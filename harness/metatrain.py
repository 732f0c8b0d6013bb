"""Meta-training (TinyTrain's optional offline stage): episodic ProtoNet training of the
pre-trained backbone on the source classes, cached by recipe like the pre-trained one.

Each episode is drawn from the source split (``suites.data.episodes``, seed = ``seed`` + episode
number); the loss is cross-entropy over the query images' ProtoNet logits (minus squared
distances to the support set's class prototypes, ``suites.fewshot``); BN in train mode; SGD with
momentum over every backbone parameter (the classifier is unused and stays as pre-trained).
"""
import logging

import torch
import torch.nn.functional as F

from suites.data.batches import to_model_input
from suites.data.episodes import sample_episode
from suites.fewshot import distance_logits, features, prototypes
from suites.models import build, spec

from .cache import ArtifactCache
from .pretrain import dataset_artifacts, pretrain

log = logging.getLogger("odt_bench.metatrain")
META_TRAINED = "meta-trained"
"""The job's ``checkpoint`` value that names the meta-trained backbone of the job's model and resolution."""
EPISODES, PROTOCOL, LR = 300, "5way-5shot-10query", 0.01


def meta_train(model_name, resolution, cache: ArtifactCache, episodes=EPISODES, protocol=PROTOCOL, lr=LR, seed=0):
    """sha256 of the meta-trained backbone; trained only if not cached."""
    backbone = pretrain(model_name, resolution, cache)
    source = dataset_artifacts(cache)["source"]
    recipe = {"what": "meta-train", "version": 1, "model": model_name, "resolution": resolution,
              "backbone": backbone, "dataset": source, "episodes": episodes, "protocol": protocol, "lr": lr,
              "seed": seed, "momentum": 0.9}
    sha = cache.lookup(recipe)
    if sha:
        return sha
    arrays = torch.load(cache.path(source), weights_only=True)
    labels = arrays["y_train"].tolist()
    torch.manual_seed(seed)
    model = build(spec(model_name), len(arrays["classes"]))
    model.load_state_dict(torch.load(cache.path(backbone), weights_only=True))
    params = [p for name, p in model.named_parameters() if not name.startswith("classifier.")]
    optimizer = torch.optim.SGD(params, lr=lr, momentum=0.9)
    model.train()
    for i in range(episodes):
        episode = sample_episode(labels, protocol, seed + i)
        loss, correct = _episode_loss(model, arrays["x_train"], episode, resolution)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if (i + 1) % 50 == 0 or i + 1 == episodes:
            log.info("meta-train %s @%d: episode %d/%d, loss %.3f, query accuracy %.2f", model_name, resolution,
                     i + 1, episodes, float(loss.detach()), correct)
    sha = cache.put_torch(model.state_dict())
    cache.remember(recipe, sha)
    return sha


def _episode_loss(model, images, episode, resolution):
    """ProtoNet's loss on one episode and its query accuracy."""
    x = to_model_input(images[torch.tensor(episode.support + episode.query)], resolution)
    feats = features(model, x)
    support, query = feats[:len(episode.support)], feats[len(episode.support):]
    logits = distance_logits(query, prototypes(support, torch.tensor(episode.support_labels), len(episode.classes)))
    target = torch.tensor(episode.query_labels)
    return F.cross_entropy(logits, target), float((logits.argmax(1) == target).float().mean())
