"""Measured saved bytes and counted FLOPs against independent computations."""
import pytest
import torch
from torch import nn

from harness.analysis import analyze, prepared_model
from harness.analysis.flops import count_flops
from suites import models
from tests.helpers import plan_for


def _structural_saved_bytes(model, plan, x):
    """What stock autograd keeps in the trainable region, from the structure alone: every conv's
    input from the earliest trainable conv on, the input of each ReLU6 there (a folded conv's
    output), and the classifier's input. fp32."""
    convs = models.convs(model)
    trainable = [i for i, layer in enumerate(plan["update_plan"]["layers"][:-1])
                 if layer["update"] != "frozen"]
    first = trainable[0]
    sizes = {}
    for i, conv in enumerate(convs):
        conv.register_forward_hook(lambda m, inp, out, i=i: sizes.__setitem__(i, (inp[0].numel(), out.numel())))
    with torch.no_grad():
        model(x)
    acts = {id(m.conv): not isinstance(m.act, nn.Identity) for m in model.modules() if hasattr(m, "act")}
    total = 0
    for i in range(first, len(convs)):
        n_in, n_out = sizes[i]
        total += n_in + (n_out if acts[id(convs[i])] else 0)
    return 4 * (total + model.classifier.in_features * x.shape[0])


@pytest.mark.parametrize("model_name", ["mbv2-w0.35", "mcunet-5fps"])
@pytest.mark.parametrize("k", [1, 6, 15])
def test_bp_last_k_saved_bytes_match_the_structure(model_name, k):
    plan = plan_for(model=model_name, method="bp-last-k", method_params={"k": k}, batch=2)
    measured = analyze(plan)["measured_saved_bytes"].value
    expected = _structural_saved_bytes(prepared_model(plan), plan, torch.zeros(2, 3, 128, 128))
    assert abs(measured - expected) <= 0.01 * expected


def test_stock_bias_only_keeps_about_two_thirds_of_full():
    full = analyze(plan_for(method="full"))["measured_saved_bytes"].value
    bias = analyze(plan_for(method="bias-only"))["measured_saved_bytes"].value
    assert 0.55 < bias / full < 0.75


def test_last_layer_keeps_only_the_classifier_input():
    result = analyze(plan_for(method="last-layer", batch=3))
    assert result["measured_saved_bytes"].value == 3 * 112 * 4
    assert result["memory_bytes"]["saved_inputs_fp32"].value == 0


@pytest.mark.parametrize("method", ["full", "last-layer", "bias-only", "bp-last-k"])
def test_counted_backward_flops_equal_the_analytic_exact_count(method):
    result = analyze(plan_for(model="mcunet-5fps", method=method, resolution=96))
    assert result["counted_backward_flops"].value == 2 * result["analytic_backward"]["exact_backward_macs"].value
    assert result["counted_forward_flops"].value == 2 * result["forward_macs"].value


def test_depthwise_conv_weight_gradient_flops_are_counted_per_channel():
    conv = nn.Conv2d(32, 32, 3, padding=1, groups=32, bias=False)
    model = nn.Sequential(conv, nn.Flatten(), nn.Linear(32 * 8 * 8, 2))
    x = torch.randn(4, 32, 8, 8)  # input needs no grad: the conv computes only its weight gradient
    flops = count_flops(model, x, torch.zeros(4, dtype=torch.long))
    conv_forward = 2 * 4 * 32 * 9 * 8 * 8
    linear = 2 * 4 * 32 * 8 * 8 * 2
    assert flops["forward"] == conv_forward + linear
    assert flops["backward"] == conv_forward + 2 * linear  # weight grad of conv; linear: weight + input


def test_saved_inputs_fp32_counts_trained_conv_inputs():
    plan = plan_for(method="bp-last-k", method_params={"k": 1})
    model = prepared_model(plan)
    last = models.convs(model)[-1]
    seen = []
    last.register_forward_hook(lambda m, i, o: seen.append(i[0].numel()))
    model(torch.zeros(1, 3, 128, 128))
    assert analyze(plan)["memory_bytes"]["saved_inputs_fp32"].value == 4 * seen[0]
