"""SparseUpdate: the released presets as plans, the analytic conventions (the authors' int8 memory,
TinyTrain's backward MACs, the op library's fp32 plan), measured bytes with ops = "odt", and bad
presets refused clearly."""
import json
import re

import pytest
import torch
import torch.nn.functional as F

from harness.analysis import analyze
from suites.counts import analytic_counts
from harness.cache import ArtifactCache
from harness.compile import compile_job
from harness.executor import prepare_model
from harness.job import Job, JobError
from suites import models
from suites.methods.sparse_update import PRESET_FORMAT, top_channels
from tests.helpers import plan_for

PRESETS = [(name, label) for name in models.names() for label in models.sparse_update_schemes(name)]


def _sparse(model="mbv2-w0.35", preset="99kb", **kw):
    return plan_for(model=model, method="sparse-update", method_params={"preset": preset}, **kw)


@pytest.mark.parametrize("model,label", PRESETS)
def test_every_released_preset_lands_within_3_percent_of_its_label(model, label):
    plan = _sparse(model, label)
    counts = analytic_counts(plan, torch.zeros(1, 3, 128, 128))
    kib = int(label[:-2]) * 1024
    assert abs(counts["sparseupdate_int8"] - kib) <= 0.03 * kib, (counts["sparseupdate_int8"], kib)


def test_mbv2_99kb_backward_macs_are_tinytrains_8_10m():
    counts = analytic_counts(_sparse(), torch.zeros(1, 3, 128, 128))
    assert counts["tinytrain_macs"] == 8_096_256  # TinyTrain's table: 8.10M


def test_the_99kb_plan_is_the_scheme_with_top_l2_channels_of_the_folded_weights():
    plan = _sparse()
    layers = plan["update_plan"]["layers"]
    scheme = models.sparse_update_schemes("mbv2-w0.35")["99kb"]
    convs = len(layers) - 1
    first_bias = convs - scheme["n_bias_update"]
    assert [l["update"] for l in layers[:first_bias]] == ["frozen"] * first_bias
    ratios = dict(zip(scheme["manual_weight_idx"], scheme["weight_update_ratio"]))
    model, _ = prepare_model(plan_for(method="last-layer"))  # same seed, BN folded
    folded = models.convs(model)
    for layer in layers[first_bias:convs]:
        ratio = ratios.get(layer["index"], 0)
        expected = {0: "bias", 1: "weight"}.get(ratio, "channels")
        assert layer["update"] == expected, layer
        if expected == "channels":
            weight = folded[layer["index"]].weight.detach()
            width = weight.shape[1]
            assert len(layer["channels"]) == int(width * ratio)
            norms = weight.transpose(0, 1).reshape(width, -1).norm(dim=1)
            chosen = set(layer["channels"])
            assert min(norms[c] for c in chosen) >= max(norms[c] for c in range(width) if c not in chosen)
    assert layers[-1] == dict(layers[-1], name="classifier", update="weight")


def test_top_channels_of_a_depthwise_conv_are_its_channels():
    weight = torch.zeros(8, 1, 3, 3)
    weight[5] += 3.0
    weight[2] += 2.0
    assert top_channels(weight, 0.25, depthwise=True) == [2, 5]


@pytest.mark.parametrize("model,preset", [("mbv2-w0.35", "99kb"), ("mbv2-w0.35", "49kb"), ("mcunet-5fps", "74kb")])
def test_odt_ops_keep_exactly_the_plans_fp32_bytes(model, preset):
    result = analyze(_sparse(model, preset, ops="odt"))
    measured, planned = result["measured_saved_bytes"].value, result["memory_bytes"]["plan_fp32"].value
    assert abs(measured - planned) <= 0.10 * planned, (measured, planned)
    assert result["allocator_saved_bytes"].value == measured  # nothing hidden from the hooks


def test_odt_sparse_update_and_bias_only_keep_100x_and_50x_fewer_bytes_than_full():
    full = analyze(plan_for(method="full"))["measured_saved_bytes"].value
    sparse = analyze(_sparse(ops="odt"))["measured_saved_bytes"].value
    bias = analyze(plan_for(method="bias-only", ops="odt"))["measured_saved_bytes"].value
    assert full >= 100 * sparse and full >= 50 * bias, (full, sparse, bias)


@pytest.mark.parametrize("preset", ["99kb", "49kb"])  # 49kb updates channels of a depthwise conv
def test_odt_and_stock_train_the_same_parameters_the_same_way(preset):
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([1, 3])
    weights = {}
    for ops in ("stock", "odt"):
        model, params = prepare_model(_sparse(preset=preset, resolution=64, batch=2, ops=ops))
        optimizer = torch.optim.SGD(params, lr=0.5)
        for _ in range(2):
            F.cross_entropy(model(x), y).backward()
            optimizer.step()
            optimizer.zero_grad()
        model(x)  # writes trained channels into the full weights
        weights[ops] = {k: v for k, v in model.state_dict().items() if k.endswith(("weight", "bias"))}
    initial, _ = prepare_model(_sparse(preset=preset, resolution=64, batch=2))
    trained = [name for name, value in initial.state_dict().items()
               if name in weights["stock"] and not torch.equal(value, weights["stock"][name])]
    channel_layers = [layer["name"] + ".weight" for layer in _sparse(preset=preset)["update_plan"]["layers"]
                      if layer["update"] == "channels"]
    assert channel_layers and set(channel_layers) <= set(trained)  # the test trains what it compares
    for name, value in weights["stock"].items():
        torch.testing.assert_close(weights["odt"][name], value, rtol=1e-4, atol=1e-5, msg=name)


def _preset_file(tmp_path, **changes):
    doc = dict({"format": PRESET_FORMAT, "version": 1, "model": "mbv2-w0.35"},
               **models.sparse_update_schemes("mbv2-w0.35")["49kb"])
    doc.update(changes)
    path = tmp_path / "preset.json"
    path.write_text(json.dumps(doc))
    return str(path)


def test_a_preset_file_gives_the_same_plan_as_the_released_label(tmp_path):
    assert _sparse(preset=_preset_file(tmp_path))["update_plan"] == _sparse(preset="49kb")["update_plan"]


@pytest.mark.parametrize("changes,message", [
    ({"manual_weight_idx": [36, 39, 40, 41, 42, 45, 48, 51]}, "conv 51 does not exist; the model has convs 0 to 50"),
    ({"weight_update_ratio": [1, 1, 0, 0.3, 0.125, 0.125, 0.125, 0.125]}, "conv 41 has ratio 0.3; ratios are 0, 1/8, 1/4, 1/2, 1"),
    ({"n_bias_update": 60}, "n_bias_update must be an integer from 0 to 51"),
    ({"model": "mcunet-5fps"}, "is for model 'mcunet-5fps', not 'mbv2-w0.35'"),
    ({"format": "other"}, "is not an odt-bench sparse-update preset"),
    ({"weight_update_ratio": [1]}, "8 conv indices but 1 ratios"),
])
def test_a_bad_preset_file_is_refused_naming_the_problem(tmp_path, changes, message):
    with pytest.raises(JobError, match=re.escape(message)):
        compile_job(Job(model="mbv2-w0.35", method="sparse-update", method_params={"preset": _preset_file(tmp_path, **changes)}),
                    ArtifactCache())


def test_an_unknown_preset_lists_the_models_released_ones():
    with pytest.raises(JobError, match="unknown preset '100kb' for mcunet-5fps: the released presets are 49kb, 74kb, 99kb, 124kb, 148kb"):
        compile_job(Job(model="mcunet-5fps", method="sparse-update", method_params={"preset": "100kb"}), ArtifactCache())
