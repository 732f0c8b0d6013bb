import pytest
import torch

from harness.executor import prepare_model
from suites import models
from suites.methods import BpLastK, PlanContext, apply_plan, fold_batchnorm, layer_table
from tests.helpers import plan_for


def _trainable(model):
    return {name for name, p in model.named_parameters() if p.requires_grad}


def test_full_trains_everything_with_bn_in_train_mode():
    model, params = prepare_model(plan_for(method="full"))
    assert len(params) == len(list(model.parameters()))
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and all(bn.training for bn in bns)


def test_last_layer_trains_only_the_classifier():
    model, _ = prepare_model(plan_for(method="last-layer"))
    assert _trainable(model) == {"classifier.weight", "classifier.bias"}
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())


def test_bias_only_trains_folded_biases_and_the_classifier():
    model, _ = prepare_model(plan_for(method="bias-only"))
    names = _trainable(model)
    assert {"classifier.weight", "classifier.bias"} <= names
    assert all(n.endswith("bias") for n in names - {"classifier.weight"})
    assert len(names) == len(models.convs(model)) + 2


def test_bp_last_k_trains_exactly_the_last_k_convs():
    model, _ = prepare_model(plan_for(method="bp-last-k", method_params={"k": 4}))
    convs = models.convs(model)
    assert [c.weight.requires_grad for c in convs] == [False] * (len(convs) - 4) + [True] * 4


def _context(name="mcunet-5fps"):
    model = models.build(models.spec(name), 10)
    return PlanContext(name, layer_table(model), model)


def test_bp_last_k_rejects_k_out_of_range():
    with pytest.raises(ValueError, match="42 convs"):
        BpLastK().plan(_context(), k=43)


@pytest.mark.parametrize("name", ["mbv2-w0.35", "resnet18"])
def test_folding_keeps_the_eval_output(name):
    torch.manual_seed(0)
    model = models.build(models.spec(name), 10)
    for m in model.modules():  # non-trivial statistics, so a wrong fold shows
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    model.eval()
    x = torch.randn(2, 3, 64, 64)
    before = model(x)
    fold_batchnorm(model)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in model.modules())  # a missed unit keeps its BN
    torch.testing.assert_close(model(x), before, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("method", ["last-layer", "bp-last-k"])
def test_nothing_before_the_earliest_trainable_layer_is_back_propagated(method):
    model, _ = prepare_model(plan_for(method=method, resolution=64))
    convs = models.convs(model)
    first = next((i for i, c in enumerate(convs) if c.weight.requires_grad), len(convs))
    needs_grad = []
    for conv in convs:
        conv.register_forward_hook(lambda m, i, o: needs_grad.append(o.requires_grad))
    model(torch.randn(1, 3, 64, 64))
    assert needs_grad == [False] * first + [True] * (len(convs) - first)


def test_apply_plan_rejects_unknown_ops_and_layers():
    context = _context("mbv2-w0.35")
    model, plan = context.model, BpLastK().plan(context, k=2)
    with pytest.raises(ValueError, match="unknown ops 'tte'; known: stock, odt"):
        apply_plan(model, plan, ops="tte")
    plan["layers"][0]["name"] = "nope.conv"
    with pytest.raises(ValueError, match="nope.conv"):
        apply_plan(model, plan)


def test_the_harness_knows_the_op_sets_and_schedules_the_device_knows():
    from harness import job
    from suites import train
    from suites.methods import apply

    assert job.OPS == apply.OPS and job.LR_SCHEDULES == train.LR_SCHEDULES


def test_the_cosine_schedule_warms_up_then_decays_to_zero_and_the_trainer_follows_it():
    from suites.train import Trainer, lr_factor

    steps = 40  # warm-up: the first 2 steps
    factors = [lr_factor("cosine", t, steps) for t in range(steps)]
    assert factors[:3] == [0.5, 1.0, 1.0] and factors[-1] == pytest.approx(0.0, abs=0.01)
    assert all(a >= b for a, b in zip(factors[1:], factors[2:]))
    assert {lr_factor("constant", t, steps) for t in range(steps)} == {1.0}
    model = torch.nn.Linear(3, 2)
    trainer = Trainer(model, list(model.parameters()), 0.2, schedule="cosine", steps=steps)
    x, y = torch.randn(4, 3), torch.tensor([0, 1, 0, 1])
    seen = []
    for _ in range(3):
        trainer.step(x, y)
        seen.append(trainer.optimizer.param_groups[0]["lr"])
    assert seen == pytest.approx([0.2 * f for f in factors[:3]])
    with pytest.raises(ValueError, match="unknown lr schedule 'step'"):
        Trainer(model, list(model.parameters()), 0.1, schedule="step")
