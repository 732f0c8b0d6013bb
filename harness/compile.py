"""Host compiles: a Job becomes a fully resolved, language-neutral ExecutionPlan (plain JSON).

The plan holds the model as data (its architecture spec), the per-layer UpdatePlan, the numeric
format, data and checkpoint by content hash, the step schedule, seeds and their derivation.
"""
from pathlib import Path

import torch

from suites import models
from suites.data import IMAGEFOLDER, NAMES as DATA_NAMES, episode_mismatch, is_episodic
from suites.data.episodes import EpisodeError, sample_episode
from suites.methods import PlanContext, layer_table

from . import registry
from .cache import ArtifactCache
from .executor import load_backbone
from .job import Job, JobError, parse_cpus
from .metatrain import META_TRAINED, meta_train
from .pretrain import dataset_artifacts, fewshot_pool, imagefolder_pool, pretrain

FORMAT = "odt-bench/execution-plan"
VERSION = 1
SYNTHETIC_CLASSES = 10
SEED_DERIVATION = ("init = seed (model init, head init); data = seed + 1 (batch order, synthetic tensors); "
                   "calibration = seed + 2 (the int8 graph's activation scales)")
EPISODE_SEED = "; episode = seed (its classes and images: suites.data.episodes), so every method of a seed sees one episode"


def _user_checkpoint(path, cache):
    path = Path(path)
    if not path.is_file():
        raise JobError("checkpoint file %s does not exist" % path)
    try:
        torch.load(path, weights_only=True)
    except Exception as exc:
        raise JobError("checkpoint file %s cannot be loaded with weights_only=True: %s" % (path, exc))
    return cache.put_file(path)


@torch.no_grad()
def _check_batchnorm_statistics(model, job):
    """BatchNorm in train mode needs more than one value per channel: at batch 1 every BN input
    must be larger than 1x1, or the device would fail mid-run."""
    smallest = []
    hooks = [m.register_forward_hook(lambda mod, inputs, out: smallest.append(inputs[0].shape[2:].numel()))
             for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.eval()(torch.zeros(1, 3, job.resolution, job.resolution))
    for h in hooks:
        h.remove()
    if smallest and min(smallest) <= 1:
        raise JobError("method %r trains BatchNorm in train mode, which needs more than one value per "
                       "channel; batch 1 at resolution %d reaches 1x1 feature maps: use batch >= 2 or a "
                       "larger resolution" % (job.method, job.resolution))


def _checkpoint(job, cache):
    """The backbone's sha256: the user's file, the meta-trained one, or the pre-trained one."""
    if job.checkpoint == META_TRAINED:
        return meta_train(job.model, job.resolution, cache)
    if job.checkpoint:
        return _user_checkpoint(job.checkpoint, cache)
    return pretrain(job.model, job.resolution, cache)


def _episode_data(job, cache):
    if job.data == "mnist5k-fewshot":
        pool = fewshot_pool(cache)
    else:
        pool = imagefolder_pool(job.data[len(IMAGEFOLDER):], job.resolution, cache)
    labels = torch.load(cache.path(pool), weights_only=True)["y"].tolist()
    try:
        episode = sample_episode(labels, job.episode, job.seed)
    except EpisodeError as exc:
        raise JobError("data %r, episode %r, seed %d: %s" % (job.data, job.episode, job.seed, exc))
    return {"kind": "episode", "name": job.data, "artifact": pool, "resolution": job.resolution,
            "num_classes": len(episode.classes), "episode": episode.to_dict()}


def _data(job: Job, cache: ArtifactCache):
    """(data spec, checkpoint sha or None)."""
    if job.data == "synthetic":
        return {"kind": "synthetic", "name": job.data, "resolution": job.resolution,
                "num_classes": SYNTHETIC_CLASSES}, None
    if job.data == "mnist5k-transfer":
        target = dataset_artifacts(cache)["target"]
        return {"kind": "image-transfer", "name": job.data, "artifact": target,
                "resolution": job.resolution, "num_classes": 5}, _checkpoint(job, cache)
    if is_episodic(job.data):
        return _episode_data(job, cache), _checkpoint(job, cache)
    raise JobError("unknown data %r; known: %s" % (job.data, ", ".join(DATA_NAMES)))


def _starting_model(job, spec, num_classes, checkpoint, cache):
    """The model as the device starts training it (its seeded initialisation and the checkpoint's
    backbone), for methods that choose from the weights (e.g. channels by weight norm)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(job.seed)  # the plan's init seed, as the device seeds it
        model = models.build(spec, num_classes)
    if checkpoint:
        try:
            load_backbone(model, torch.load(cache.path(checkpoint), weights_only=True), checkpoint[:12])
        except RuntimeError as exc:  # missing tensors, or tensors of other shapes
            raise JobError("checkpoint %s does not fit model %r: %s" % (job.checkpoint or checkpoint[:12], job.model,
                                                                      str(exc).splitlines()[0]))
    return model


def compile_job(job: Job, cache: ArtifactCache) -> dict:
    method, params = registry.method_with_params(job.method, job.method_params)
    mismatch = episode_mismatch(job.data, job.episode)
    if mismatch:
        raise JobError(mismatch)
    spec = models.spec(job.model)
    data, checkpoint = _data(job, cache)
    if spec.get("resolution") not in (None, job.resolution):
        raise JobError("model %r takes %dx%d inputs only; set the job's resolution to %d (got %d)"
                       % (job.model, spec["resolution"], spec["resolution"], spec["resolution"], job.resolution))
    model = _starting_model(job, spec, data["num_classes"], checkpoint, cache)
    context = PlanContext(job.model, layer_table(model), model, job.resolution)
    on_device = getattr(method, "on_device", False)
    try:
        if on_device:  # the device chooses the plan from the data (TinyTrain); checked and resolved here
            selection, update_plan = {"policy": job.method, "params": method.prepare(context, **params)}, None
        else:
            selection, update_plan = None, method.plan(context, **params)
    except ValueError as exc:
        raise JobError(str(exc))
    if on_device and job.numeric != "fp32":
        raise JobError("method %r selects on the fp32 model; use numeric 'fp32'" % job.method)
    filtered = update_plan is not None and any(layer["update"] == "filtered" for layer in update_plan["layers"])
    if filtered and job.ops != "odt":
        raise JobError("method %r filters gradients, which only the op library does: set ops 'odt' "
                       "(ops = \"odt\" in a plan, --ops odt on the command line)" % job.method)
    if job.mode == "paired" and not filtered:
        raise JobError("mode 'paired' times a gradient-filtered plan against its exact twin; method %r filters "
                       "no layer" % job.method)
    if job.numeric != "fp32" and update_plan and update_plan["bn"] != "fold":
        raise JobError("method %r trains BatchNorm, which the int8 graph does not have (BN is folded into "
                       "its convs); use numeric 'fp32' or a method that folds BN" % job.method)
    if update_plan and update_plan["bn"] == "train" and job.batch == 1:
        _check_batchnorm_statistics(model, job)
    return {
        "format": FORMAT,
        "version": VERSION,
        "cell_id": job.cell_id,
        "model": {"name": job.model, "spec": spec, "num_classes": data["num_classes"]},
        "method": {"name": job.method, "params": params},
        "update_plan": update_plan,
        "selection": selection,
        "ops": job.ops,
        "numeric": job.numeric,
        "device": job.device,
        "data": data,
        "checkpoint": checkpoint,
        "schedule": {"batch": _batch(job, data), "warmup": job.warmup, "steps": job.steps, "lr": job.lr,
                     "lr_schedule": job.lr_schedule, "momentum": 0.0},
        "seeds": {"seed": job.seed, "init": job.seed, "data": job.seed + 1,
                  "derivation": SEED_DERIVATION + (EPISODE_SEED if job.episode else "")},
        "threads": job.threads,
        "cpus": parse_cpus(job.cpus),
        "mode": job.mode,
        "twin": exact_twin(update_plan) if job.mode == "paired" else None,
    }


def _batch(job, data):
    """The job's batch; on an episode at most its support set (each step then uses all of it)."""
    if data["kind"] == "episode":
        return min(job.batch, len(data["episode"]["support"]))
    return job.batch


def exact_twin(update_plan):
    """The plan that trains the same layers by exact backprop with stock layers: every filtered
    conv becomes a whole-weight update (the baseline a paired cell runs beside its own plan)."""
    layers = [{k: v for k, v in dict(layer, update="weight").items() if k not in ("patch", "compact")}
              if layer["update"] == "filtered" else layer for layer in update_plan["layers"]]
    return {"update_plan": dict(update_plan, layers=layers), "ops": "stock"}
