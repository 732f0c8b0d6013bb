"""TinyTrain: the Fisher potential, the budgeted selection, its errors, and a cell end to end."""
import copy
import re

import pytest
import torch
import torch.nn.functional as F

from harness.cache import ArtifactCache
from harness.compile import compile_job
from harness.job import Job, JobError
from harness.journal import read_journal
from harness.cli import main
from harness.analysis.saved import measure_saved
from suites import models
from suites.counts import plan_counts
from suites.fewshot import features
from suites.data.batches import to_model_input
from suites.methods import PlanContext, apply_plan, fold_batchnorm, layer_table, make_plan
from suites.methods.sparse_update import top_channels
from suites.methods.tinytrain import TinyTrain, channel_count, fisher_potentials, select, structure

RESOLUTION = 32


def _model(name="mbv2-w0.35", classes=3, seed=0):
    """A seeded model whose BN statistics are those of random inputs (a fresh model's eval-mode
    BN is the identity, and its gradients vanish to float noise within a few blocks)."""
    torch.manual_seed(seed)
    model = models.build(models.spec(name), classes)
    gen = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.momentum = None  # a cumulative average
        model.train()(torch.randn(16, 3, RESOLUTION, RESOLUTION, generator=gen))
    return model


def _support(classes=3, n=6, seed=1):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, RESOLUTION, RESOLUTION, generator=gen), torch.arange(n) % classes


def _context(model, name="mbv2-w0.35"):
    return PlanContext(name, layer_table(model), model, RESOLUTION)


def _direct_fisher(model, x, y):
    """Delta per input channel of every conv from module hooks: the input a conv received
    (forward hook) and the gradient reaching it (full backward hook), with explicit loops."""
    convs = models.convs(model)
    acts, grads = {}, {}
    hooks = []
    for i, conv in enumerate(convs):
        hooks.append(conv.register_forward_hook(lambda m, args, out, i=i: acts.__setitem__(i, args[0].detach())))
        hooks.append(conv.register_full_backward_hook(lambda m, gin, gout, i=i: grads.__setitem__(i, gin[0])))
    model.eval()
    F.cross_entropy(model(x.clone().requires_grad_(True)), y, reduction="sum").backward()
    for h in hooks:
        h.remove()
    out = []
    for i in range(len(convs)):
        a, g = acts[i], grads[i]
        delta = torch.zeros(a.shape[1], dtype=torch.float64)
        for n in range(a.shape[0]):
            for c in range(a.shape[1]):
                delta[c] += float((a[n, c] * g[n, c]).sum()) ** 2
        out.append(delta / (2 * a.shape[0]))
    return out


def test_fisher_potential_matches_a_direct_computation_from_module_hooks():
    model = _model()
    x, y = _support()
    expected = _direct_fisher(_model(), x, y)
    got = fisher_potentials(model, x, y)
    assert len(got) == len(expected) == len(models.convs(model))
    scale = max(float(b.max()) for b in expected)  # channels whose products cancel are float noise
    for i, (a, b) in enumerate(zip(got, expected)):
        assert torch.allclose(a.double(), b, rtol=1e-3, atol=1e-6 * scale), "conv %d" % i
    assert all(p.requires_grad for p in model.parameters())  # the model is left as found
    assert sum(float(d.sum()) for d in got) > 0


def _prepared(memory, compute, ratio=0.5, criterion="fisher", model=None):
    model = model or _model()
    return model, TinyTrain().prepare(_context(model), memory=memory, compute=compute, ratio=ratio,
                                      criterion=criterion)


@pytest.mark.parametrize("memory,compute", [("sparse-update:99kb", "0.6*sparse-update:99kb"),
                                            ("6KiB", "3MMAC"), ("40KiB", "900kMAC")])
def test_the_selection_keeps_both_budgets_and_no_skipped_conv_would_have_fit(memory, compute):
    model, params = _prepared(memory, compute)
    x, y = _support()
    record = select(_context(model), x, y, params, seed=0)
    layers = structure(model, RESOLUTION)
    counts = plan_counts(layers, record["update_plan"])
    assert counts["plan_fp32"] <= params["memory_bytes"] and counts["tinytrain_macs"] <= params["compute_macs"]
    assert record["chosen"]  # every budget here fits at least one conv
    chosen = {c["index"]: c["channels"] for c in record["convs"] if c["outcome"] == "chosen"}
    assert sorted(chosen) == record["chosen"]
    for conv in record["convs"]:
        if conv["outcome"] == "chosen":
            continue
        updates = dict(chosen, classifier="weight")
        updates[conv["index"]] = conv["channels"]
        wider = plan_counts(layers, make_plan(layer_table(model), "fold", updates))
        over = {"over memory": wider["plan_fp32"] > params["memory_bytes"],
                "over compute": wider["tinytrain_macs"] > params["compute_macs"]}
        assert over[conv["outcome"]], conv
    # the op library keeps exactly what the budget counted: measured bytes per sample = plan_fp32
    applied = _model()
    apply_plan(applied, record["update_plan"], "odt")
    saved = measure_saved(applied, x, y)["saved_bytes"]
    assert saved == counts["plan_fp32"] * len(y) <= params["memory_bytes"] * len(y)


def test_layers_are_tried_in_score_order_and_channels_follow_the_criterion():
    model, params = _prepared("sparse-update:99kb", "sparse-update:99kb")
    x, y = _support()
    record = select(_context(model), x, y, params, seed=0)
    deltas = _direct_fisher(_model(), x, y)
    convs = models.convs(model)
    for entry in record["convs"]:
        i = entry["index"]
        assert entry["potential"] == pytest.approx(float(deltas[i].sum()), rel=1e-3)
        top = torch.sort(deltas[i], descending=True, stable=True).indices[:channel_count(convs[i], 0.5)]
        assert entry["channels"] == sorted(top.tolist())
    # the greedy order: the best-scoring conv of those that fit the budgets alone is always taken
    layers, table = structure(model, RESOLUTION), layer_table(model)
    alone = [c for c in record["convs"]
             if plan_counts(layers, make_plan(table, "fold", {c["index"]: c["channels"], "classifier": "weight"}))
             ["plan_fp32"] <= params["memory_bytes"]
             and plan_counts(layers, make_plan(table, "fold", {c["index"]: c["channels"], "classifier": "weight"}))
             ["tinytrain_macs"] <= params["compute_macs"]]
    assert max(alone, key=lambda c: c["score"])["index"] in record["chosen"]


def test_l2_norm_and_random_criteria():
    x, y = _support()
    model, params = _prepared("sparse-update:99kb", "sparse-update:99kb", criterion="l2-norm")
    record = select(_context(model), x, y, params, seed=0)
    folded = models.convs(fold_batchnorm(copy.deepcopy(model)))
    for entry in record["convs"]:
        conv = folded[entry["index"]]
        assert entry["channels"] == top_channels(conv.weight.detach(), 0.5, conv.groups > 1)
    model, params = _prepared("sparse-update:99kb", "sparse-update:99kb", criterion="random")
    first = select(_context(model), x, y, params, seed=0)["convs"]
    again = select(_context(model), x, y, params, seed=0)["convs"]
    other = select(_context(model), x, y, params, seed=1)["convs"]
    assert [c["channels"] for c in first] == [c["channels"] for c in again]
    assert [c["channels"] for c in first] != [c["channels"] for c in other]


@pytest.mark.parametrize("params,message", [
    ({"memory": "10B"}, "below the"),
    ({"compute": "1MAC"}, "no conv fits the budgets"),  # tinytrain_macs counts convs only
    ({"memory": "600B"}, "no conv fits the budgets"),  # the classifier needs 448 B, the cheapest conv 644 B
    ({"memory": "100"}, "needs a number and a unit"),
    ({"compute": "sparse-update:77kb"}, "unknown preset '77kb'"),
    ({"ratio": 0.0}, "ratio must be in (0, 1]"),
    ({"ratio": 1.5}, "ratio must be in (0, 1]"),
    ({"criterion": "magnitude"}, "criterion 'magnitude'; known: fisher, l2-norm, random"),
])
def test_bad_budgets_and_parameters_are_refused_at_compile_time(params, message):
    given = dict({"memory": "sparse-update:99kb", "compute": "sparse-update:99kb", "ratio": 0.5,
                  "criterion": "fisher"}, **params)
    job = Job(model="mbv2-w0.35", method="tinytrain", resolution=RESOLUTION, method_params=given)
    with pytest.raises(JobError, match=re.escape(message)):
        compile_job(job, ArtifactCache())


@pytest.mark.parametrize("name,preset", [("mbv2-w0.35", "99kb"), ("mcunet-5fps", "99kb"), ("proxyless-w0.3", "98kb")])
def test_a_preset_budget_is_that_preset_s_own_count(name, preset):
    from suites.methods.sparse_update import load_scheme, scheme_plan

    model = _model(name)
    context = _context(model, name)
    params = TinyTrain().prepare(context, memory="sparse-update:" + preset, compute="0.6*sparse-update:" + preset,
                                 ratio=0.5, criterion="fisher")
    counts = plan_counts(structure(model, RESOLUTION), scheme_plan(context, load_scheme(name, preset)))
    assert params["memory_bytes"] == counts["plan_fp32"] > 0
    assert params["compute_macs"] == int(0.6 * counts["tinytrain_macs"]) > 0


def test_the_host_cannot_plan_tinytrain_without_the_device():
    model = _model()
    with pytest.raises(ValueError, match="on the device"):
        TinyTrain().plan(_context(model), memory="1KiB", compute="1MMAC", ratio=0.5, criterion="fisher")


FEWSHOT_PLAN = """
[defaults]
model = "mbv2-w0.35"
data = "mnist5k-fewshot"
episode = "3way-2shot-4query"
resolution = 32
batch = 6
steps = 3
warmup = 0
ops = "odt"
seed = [7, 8]

[methods.tinytrain]
memory = "sparse-update:99kb"
compute = "0.6*sparse-update:99kb"
ratio = 0.5
criterion = "fisher"

[[cells]]
method = ["tinytrain", "last-layer"]
"""


def test_tinytrain_cells_select_on_the_device_are_analysed_with_the_chosen_plan_and_reported(tmp_path):
    plan, results, report = tmp_path / "fewshot.toml", tmp_path / "results", tmp_path / "report"
    plan.write_text(FEWSHOT_PLAN)
    assert main(["run", "--plan", str(plan), "--results", str(results), "--report", str(report)]) == 0
    (path,) = sorted(results.rglob("*.jsonl"))
    records = read_journal(path)[0]
    assert [r["status"] for r in records] == ["ok"] * 4, [r.get("error") for r in records]
    record = next(r for r in records if r["job"]["method"] == "tinytrain" and r["job"]["seed"] == 7)
    selection = record["measurement"]["selection"]
    assert record["update_plan"] == selection["update_plan"]
    assert selection["support"] == 6 and len(selection["selection_ns"]) == len(selection["reference_ns"]) == 5
    figures = record["measurement"]["figures"]
    assert figures["selection_ns"]["value"] > 0 and figures["selection_reference_ns"]["value"] > 0
    # the host analysed the plan the device chose: its bytes are the selection's budgeted count
    assert figures["memory_bytes.plan_fp32"]["value"] == selection["counts"]["plan_fp32"]
    assert figures["measured_saved_bytes"]["value"] == 6 * selection["counts"]["plan_fp32"]
    assert "query set" in figures["accuracy_before"]["how"]
    # before any update the head is ProtoNet's: recompute its query accuracy independently
    compiled, cache = compile_job(Job.from_json(record["job"]), ArtifactCache()), ArtifactCache()
    pool = torch.load(cache.path(compiled["data"]["artifact"]), weights_only=True)
    episode = compiled["data"]["episode"]
    model = models.build(compiled["model"]["spec"], 3)
    state = torch.load(cache.path(compiled["checkpoint"]), weights_only=True)
    model.load_state_dict({k: v for k, v in state.items() if not k.startswith("classifier.")}, strict=False)
    model.eval()
    with torch.no_grad():
        support = features(model, to_model_input(pool["x"][episode["support"]], RESOLUTION))
        query = features(model, to_model_input(pool["x"][episode["query"]], RESOLUTION))
    labels = torch.tensor(episode["support_labels"])
    protos = torch.stack([support[labels == c].mean(0) for c in range(3)])
    nearest = torch.cdist(query, protos).argmin(1)
    expected = float((nearest == torch.tensor(episode["query_labels"])).float().mean())
    assert figures["accuracy_before"]["value"] == pytest.approx(expected)
    # the report's few-shot section pairs the two methods over both episodes
    text = (report / "report.md").read_text()
    section = text[text.index("## Few-shot episodes"):]
    row = next(line for line in section.splitlines() if line.startswith("| last-layer"))
    assert "(n=2)" in row and "| 2 |" in row
    assert "×)" in next(line for line in section.splitlines() if line.startswith("| tinytrain"))


def test_an_episode_asking_for_more_than_the_data_has_is_refused(tmp_path):
    for episode, message in (("7way-5shot", "asks 7 ways but the data has 5 classes"),
                             ("5way-600shot", "at least 615 images")):
        job = Job(model="mbv2-w0.35", method="last-layer", data="mnist5k-fewshot", episode=episode,
                  resolution=RESOLUTION)
        with pytest.raises(JobError, match=message):
            compile_job(job, ArtifactCache())
