"""The real-quantized int8 graph and QAS: the graph computes what the float model computes, its
trained parameters are integers, and QAS restores the fp32 gradient scale (SparseUpdate, Sec. 2)."""
import hashlib
import json
import statistics

import pytest
import torch
import torch.nn.functional as F

from harness.analysis import analyze
from harness.cache import ArtifactCache
from harness.compile import compile_job
from harness.executor import prepare_model
from harness.job import MEASURED_FIELDS, Job, JobError
from suites import models
from suites.methods.apply import fold_batchnorm
from suites.quant import Int8Conv, apply_qas, int8_graph
from targets.local import LocalTarget
from tests.helpers import plan_for


@pytest.fixture(scope="module")
def graphs():
    """A folded float mbv2-w0.35 with non-trivial BN statistics, its int8 graph, and a batch."""
    torch.manual_seed(0)
    model = models.build(models.spec("mbv2-w0.35"), 10)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.2, 0.2)
            m.running_var.uniform_(0.5, 2.0)
    folded = fold_batchnorm(model)
    x, y = torch.randn(8, 3, 96, 96), torch.randint(0, 10, (8,))
    return folded, x, y


def _weight_to_grad(model, convs, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()
    return [c.weight.norm().item() / c.weight.grad.norm().item() for c in convs]


def test_the_int8_graph_computes_the_float_models_logits_with_integer_parameters(graphs):
    folded, x, _ = graphs
    q = int8_graph(folded, x)
    convs = [m for m in q.modules() if isinstance(m, Int8Conv)]
    assert len(convs) == len(models.convs(folded))
    for c in convs:
        assert torch.equal(c.weight, c.weight.round()) and torch.equal(c.bias, c.bias.round())
        assert c.weight.abs().max() <= 127
    with torch.no_grad():
        a, b = folded(x), q(x)
    assert torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1] > 0.99
    assert (a.argmax(1) == b.argmax(1)).float().mean() >= 0.75


def test_qas_restores_the_fp32_weight_to_gradient_ratio(graphs):
    folded, x, y = graphs
    fp32 = _weight_to_grad(folded, models.convs(folded), x, y)
    q = int8_graph(folded, x)
    convs = [m for m in q.modules() if isinstance(m, Int8Conv)]
    without = _weight_to_grad(q, convs, x, y)
    apply_qas(q)
    with_qas = _weight_to_grad(q, convs, x, y)
    qas_median = statistics.median(a / b for a, b in zip(with_qas, fp32))
    plain_median = statistics.median(a / b for a, b in zip(without, fp32))
    assert 0.5 <= qas_median <= 2.0, qas_median
    assert plain_median >= 10 or plain_median <= 0.1, plain_median  # s_W^-2: off by orders of magnitude


def test_qas_scales_the_bias_gradient_by_the_square_of_its_scales(graphs):
    folded, x, y = graphs
    q = int8_graph(folded, x)
    conv = next(m for m in q.modules() if isinstance(m, Int8Conv))
    F.cross_entropy(q(x), y).backward()
    plain = conv.bias.grad.clone()
    q.zero_grad()
    apply_qas(q)
    F.cross_entropy(q(x), y).backward()
    torch.testing.assert_close(conv.bias.grad, plain / (conv.s_w * conv.s_x) ** 2)


def test_an_int8_plan_trains_the_plans_integer_parameters_with_qas():
    plan = plan_for(method="sparse-update", method_params={"preset": "99kb"}, numeric="int8", resolution=64)
    model, params = prepare_model(plan)
    trained = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "classifier.weight" in trained and "blocks.9.pw1.conv.weight" in trained  # conv 27
    assert "stem.conv.bias" not in trained
    assert all(n.endswith(("weight", "bias")) for n in trained)


def test_an_int8_cell_runs_and_labels_its_timings_and_memory_emulated():
    plan = plan_for(method="bias-only", numeric="int8", resolution=32, steps=2, warmup=1)
    run = LocalTarget().run(plan, timeout_s=300)
    assert run.result["type"] == "result"
    result = analyze(plan)
    assert result["measured_saved_bytes"].source.value == "emulated"
    assert "emulation of the int8 graph" in result["measured_saved_bytes"].how
    assert result["memory_bytes"]["sparseupdate_int8"].source.value == "analytic"


@pytest.mark.parametrize("kw,message", [
    (dict(method="full", numeric="int8"), "trains BatchNorm, which the int8 graph does not have"),
    (dict(method="bias-only", numeric="int8", ops="odt"), "needs ops 'stock'"),
    (dict(method="bias-only", numeric="int4"), "'numeric' is 'int4'; known: fp32, int8, int8-noqas"),
])
def test_bad_numeric_settings_are_refused(kw, message):
    with pytest.raises(JobError, match=message):
        compile_job(Job(model="mbv2-w0.35", **kw), ArtifactCache())


def test_the_numeric_format_joins_the_cell_id_only_when_not_fp32():
    base = Job(model="mbv2-w0.35", method="bias-only")
    before = {k: getattr(base, k) for k in MEASURED_FIELDS}  # the id as computed before the field existed
    blob = json.dumps(before, sort_keys=True, separators=(",", ":")).encode()
    assert base.cell_id == "c" + hashlib.sha256(blob).hexdigest()[:12]
    assert Job(model="mbv2-w0.35", method="bias-only", numeric="int8").cell_id != base.cell_id
    assert Job(model="mbv2-w0.35", method="bias-only", numeric="int8").label == "bias-only+int8"
