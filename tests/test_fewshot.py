"""Few-shot data end to end: episode cells on the shipped data and on an ImageFolder directory,
the prototype head, the meta-trained backbone, and bad episodes."""
import pandas as pd
from matplotlib.collections import LineCollection, PathCollection
import pytest
import torch
from PIL import Image

from harness.cache import ArtifactCache
from harness.compile import compile_job
from harness.executor import Execution, ExecutionError
from harness.job import Job, JobError
from harness.metatrain import META_TRAINED, meta_train
from harness.plan import PlanError, jobs_from
from harness.pretrain import pretrain
from harness.report.fewshot import fewshot_section
from harness.report.figures import png_bytes
from suites import models
from suites.data import make_batches
from suites.fewshot import distance_logits, features, prototype_head, prototypes

RESOLUTION = 32


def test_the_prototype_head_predicts_the_nearest_prototype():
    torch.manual_seed(0)
    model = models.build(models.spec("mbv2-w0.35"), 4)
    gen = torch.Generator().manual_seed(1)
    x, y = torch.randn(12, 3, RESOLUTION, RESOLUTION, generator=gen), torch.arange(12) % 4
    prototype_head(model, x, y)
    model.eval()
    with torch.no_grad():
        queries = torch.randn(20, 3, RESOLUTION, RESOLUTION, generator=gen)
        feats = features(model, queries)
        protos = torch.stack([features(model, x)[y == c].mean(0) for c in range(4)])
        assert torch.equal(model(queries).argmax(1), torch.cdist(feats, protos).argmin(1))
        assert torch.equal(distance_logits(feats, protos).argmax(1), model(queries).argmax(1))


def test_prototypes_need_every_class():
    with pytest.raises(ValueError, match="class 2 has no support image"):
        prototypes(torch.zeros(4, 3), torch.tensor([0, 1, 0, 1]), 3)


def _episode_plan(**kw):
    fields = dict(model="mbv2-w0.35", method="last-layer", data="mnist5k-fewshot", episode="3way-2shot-4query",
                  resolution=RESOLUTION, batch=32, steps=2, warmup=0, ops="odt")
    fields.update(kw)
    return compile_job(Job(**fields), ArtifactCache())


def test_an_episode_cell_adapts_on_its_support_set_and_scores_on_its_query_set():
    plan = _episode_plan(seed=3)
    episode = plan["data"]["episode"]
    assert plan["data"]["kind"] == "episode" and plan["model"]["num_classes"] == 3
    assert plan["schedule"]["batch"] == len(episode["support"]) == 6  # at most the support set
    assert "episode = seed" in plan["seeds"]["derivation"]
    assert _episode_plan(seed=3)["data"]["episode"] == episode  # seeded
    assert _episode_plan(seed=4)["data"]["episode"] != episode
    pool = torch.load(ArtifactCache().path(plan["data"]["artifact"]), weights_only=True)
    assert not set(episode["support"]) & set(episode["query"])
    # every class of the episode is one digit of the pool, relabelled by its position
    for indices, labels in ((episode["support"], episode["support_labels"]), (episode["query"], episode["query_labels"])):
        assert [episode["classes"][label] for label in labels] == pool["y"][indices].tolist()
    batches = make_batches(plan["data"], 6, 0, pool)
    x, y = batches.next()
    assert x.shape == (6, 3, RESOLUTION, RESOLUTION) and sorted(y.tolist()) == sorted(episode["support_labels"])
    assert sum(len(yb) for _, yb in batches.evaluation()) == len(episode["query"]) == 12


def test_an_empty_support_set_is_refused_by_the_device():
    plan = _episode_plan()
    plan["data"]["episode"] = dict(plan["data"]["episode"], support=[], support_labels=[])
    with pytest.raises(ValueError, match="support set is empty"):
        Execution(plan, str(ArtifactCache().objects), lambda: 0)


def test_few_shot_data_and_episode_fields_go_together():
    base = {"model": "mbv2-w0.35", "method": "last-layer"}
    with pytest.raises(PlanError, match="give the episode protocol"):
        jobs_from({"cells": [dict(base, data="mnist5k-fewshot")]})
    with pytest.raises(PlanError, match="needs few-shot data"):
        jobs_from({"cells": [dict(base, data="mnist5k-transfer", episode="5way-1shot")]})
    with pytest.raises(PlanError, match="out of range"):
        jobs_from({"cells": [dict(base, data="mnist5k-fewshot", episode="5way-0shot")]})


def _image_folder(root, classes=3, per_class=5):
    gen = torch.Generator().manual_seed(0)
    for c in range(classes):
        (root / ("class%d" % c)).mkdir(parents=True)
        for i in range(per_class):
            colour = tuple(int(v) for v in torch.randint(0, 256, (3,), generator=gen))
            Image.new("RGB", (20, 14), colour).save(root / ("class%d" % c) / ("%d.png" % i))
    return root


def test_an_imagefolder_episode_runs_on_the_device(tmp_path):
    root = _image_folder(tmp_path / "data")
    plan = _episode_plan(data="imagefolder:%s" % root, episode="3way-2shot-3query", seed=1)
    assert plan["data"]["num_classes"] == 3 and len(plan["data"]["episode"]["query"]) == 9
    execution = Execution(plan, str(ArtifactCache().objects), lambda: 0)
    result = execution.run(lambda message: None)
    assert result["accuracy"]["split"] == "episode's query set"
    assert result["accuracy"]["after"] is not None
    with pytest.raises(JobError, match="asks 4 ways but the data has 3 classes"):
        _episode_plan(data="imagefolder:%s" % root, episode="4way-1shot")
    (root / "class1" / "0.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="0.png"):
        _episode_plan(data="imagefolder:%s" % root, episode="3way-1shot")


def test_meta_training_makes_its_own_cached_backbone():
    cache = ArtifactCache()
    sha = meta_train("mbv2-w0.35", RESOLUTION, cache, episodes=2)
    assert sha != pretrain("mbv2-w0.35", RESOLUTION, cache)
    assert meta_train("mbv2-w0.35", RESOLUTION, cache, episodes=2) == sha  # found again by its recipe
    state = torch.load(cache.path(sha), weights_only=True)
    before = torch.load(cache.path(pretrain("mbv2-w0.35", RESOLUTION, cache)), weights_only=True)
    backbone = [k for k in state if not k.startswith("classifier.") and state[k].is_floating_point()]
    assert any(not torch.equal(state[k], before[k]) for k in backbone)
    assert all(torch.equal(state[k], before[k]) for k in state if k.startswith("classifier."))
    # a job names it by its checkpoint field; compile finds (or makes) the default recipe's
    assert _episode_plan(checkpoint=META_TRAINED)["checkpoint"] == meta_train("mbv2-w0.35", RESOLUTION, cache)


def _accuracy_rows(backbone, method, accuracies, saved=None, label=None, flops=None):
    """Long-table rows (harness.results' columns) of one method's episodes; ``saved`` bytes and
    ``flops`` counted backward FLOPs per batch of 25 when given."""
    label = label or ("tinytrain(ratio=0.5)" if method == "tinytrain" else method)
    quantities = [("accuracy_before", 0.5)] + ([("measured_saved_bytes", saved)] if saved else [])
    quantities += [("counted_backward_flops", flops)] if flops else []
    return [dict(target="local", run_id="r1", cell_id=f"{backbone}-{method}-{seed}", model="mbv2-w0.35",
                 method=method, label=label, data="mnist5k-fewshot", resolution=64, batch=25, lr=0.1,
                 seed=seed, episode="5way-5shot", checkpoint=backbone, status="ok", quantity=quantity,
                 value=value)
            for seed, accuracy in enumerate(accuracies)
            for quantity, value in quantities + [("accuracy_after", accuracy)]]


class Saved:
    """The report's ``save``: keeps each figure's name parts and the figure, rendered to PNG."""

    def __init__(self):
        self.figures = []

    def __call__(self, fig, alt, *parts):
        self.figures.append((parts, [tuple(ax.collections) for ax in fig.axes]))
        png_bytes(fig)
        return f"![{alt}](figure)"


def test_the_report_pairs_methods_within_one_backbone():
    rows = (_accuracy_rows(None, "tinytrain", [0.6, 0.6, 0.6]) + _accuracy_rows(None, "last-layer", [0.5] * 3)
            + _accuracy_rows(META_TRAINED, "tinytrain", [0.7] * 3)
            + _accuracy_rows(META_TRAINED, "last-layer", [0.8] * 3))
    text = fewshot_section(pd.DataFrame(rows), Saved())
    sections = {section.splitlines()[0].rsplit(" · ", 1)[1]: section for section in text.split("### ")[1:]}
    pretrained, meta = sections.pop("pretrained backbone"), sections.pop(f"{META_TRAINED} backbone")
    assert not sections
    for section, difference in ((pretrained, "+10.0"), (meta, "-10.0")):
        row = next(line for line in section.splitlines() if line.startswith("| last-layer"))
        assert f"{difference} [{difference}–{difference}] (n=3)" in row, row


def test_the_paired_reference_is_tinytrain_with_the_papers_criterion_over_the_most_episodes():
    fisher, short = "tinytrain(compute=0.6,criterion=fisher)", "tinytrain(compute=0.5,criterion=fisher)"
    ablation = "tinytrain(compute=0.5,criterion=random)"  # sorts first
    rows = (_accuracy_rows(None, "tinytrain", [0.3] * 3, label=ablation)
            + _accuracy_rows(None, "tinytrain", [0.4] * 2, label=short)  # fewer episodes
            + _accuracy_rows(None, "tinytrain", [0.6] * 3, label=fisher)
            + _accuracy_rows(None, "last-layer", [0.5] * 3))
    text = fewshot_section(pd.DataFrame(rows), Saved())
    assert f"| {fisher} · lr 0.1 − method, points |" in text
    row = next(line for line in text.splitlines() if line.startswith("| last-layer"))
    assert "+10.0 [+10.0–+10.0] (n=3)" in row, row


def test_per_sample_flops_keep_three_significant_digits_however_small():
    rows = (_accuracy_rows(None, "full", [0.6] * 3, saved=25 * 2_000_000, flops=25 * 15_760_000)
            + _accuracy_rows(None, "last-layer", [0.5] * 3, saved=25 * 400, flops=25 * 1_120))
    lines = fewshot_section(pd.DataFrame(rows), Saved()).splitlines()
    header = next(line for line in lines if line.startswith("| method"))
    columns = [c.strip() for c in header.strip("|").split("|")]

    def cell(label, column):
        row = next(line for line in lines if line.startswith("| " + label))
        return [c.strip() for c in row.strip("|").split("|")][columns.index(column)]

    assert cell("full", "backward MFLOP / sample") == "15.8"
    assert cell("last-layer", "backward MFLOP / sample") == "0.00112"  # was "0.00"
    assert cell("last-layer", "full ÷ FLOP") == "14,071×"
    assert cell("last-layer", "saved KiB / sample") == "0.4"  # one decimal, as the group tables


def test_the_few_shot_figure_plots_the_mean_over_episodes_with_its_interval():
    rows = (_accuracy_rows(None, "tinytrain", [0.5, 0.6, 0.7, 0.8], saved=25 * 4096)
            + _accuracy_rows(None, "last-layer", [0.4, 0.4, 0.4, 0.4], saved=25 * 512)
            + _accuracy_rows(META_TRAINED, "last-layer", [0.9] * 4))  # no bytes recorded: no figure
    saved = Saved()
    text = fewshot_section(pd.DataFrame(rows), saved)
    assert text.count("](figure)") == 1
    [(parts, [collections])] = saved.figures
    assert parts[0] == "fewshot-accuracy" and parts[-1] == "pretrained"
    points = {tuple(xy) for c in collections if isinstance(c, PathCollection) for xy in c.get_offsets()}
    assert points == {(0.5, 40.0), (4.0, 65.0)}  # KiB per sample, mean accuracy in %
    [bars] = [c for c in collections if isinstance(c, LineCollection)]
    spans = {round(s[0][0], 6): (s[0][1], s[1][1]) for s in bars.get_segments()}
    assert spans[0.5] == (40.0, 40.0)  # four equal episodes: no spread
    low, high = spans[4.0]
    assert 50 <= low < 65 < high <= 80  # the bootstrap interval of the four episodes' mean
