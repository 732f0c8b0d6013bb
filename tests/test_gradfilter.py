"""The ``gradfilter`` method: its plan, its counts under named conventions, what its ops keep, and
the paired mode that times it against its exact twin."""
import json
import math
import statistics

import pytest
import torch

from harness.analysis import analyze
from harness.analysis.analyze import prepared_model
from harness.cli import main
from harness.compile import exact_twin
from harness.job import JobError
from suites import models
from suites.methods import make_plan
from suites.ops import FilteredConv2d
from suites.train import Trainer
from tests.helpers import plan_for
from tests.test_report import parse_table, section


def _gradfilter(model="mbv2-w0.35", k=2, patch=2, resolution=128, method="gradfilter", **kw):
    kw.setdefault("ops", "odt")
    return plan_for(model=model, method=method, resolution=resolution,
                    method_params={"k": k, "patch": patch}, **kw)


def test_the_last_k_convs_are_filtered_downsample_convs_included():
    plan = _gradfilter("resnet18", k=3, resolution=64)
    layers = plan["update_plan"]["layers"]
    filtered = [layer["name"] for layer in layers if layer["update"] == "filtered"]
    assert filtered == ["blocks.6.downsample.conv", "blocks.7.unit1.conv", "blocks.7.unit2.conv"]
    assert all(layer["patch"] == 2 for layer in layers if layer["update"] == "filtered")
    assert [layer["update"] for layer in layers if layer["update"] != "filtered"] == ["frozen"] * 17 + ["weight"]
    assert plan["update_plan"]["bn"] == "fold"
    model = prepared_model(plan)
    assert sum(isinstance(m, FilteredConv2d) for m in model.modules()) == 3



@pytest.mark.parametrize("kw,message", [
    (dict(k=0), "k=0 is out of range; this model has 51 convs"),
    (dict(k=52), "k=52 is out of range"),
    (dict(patch=0), "patch must be an integer >= 1, got 0"),
    (dict(patch=5, resolution=128), r"conv 49 \(blocks.16.dw.conv\) at resolution 128: gradient filter patch 5 is "
                                    r"larger than the conv's 4x4 output; the largest patch that means anything here is 4"),
    (dict(ops="stock"), r"filters gradients, which only the op library does: set ops 'odt' \(ops = \"odt\" in a plan, "
                       r"--ops odt on the command line\)"),
])
def test_bad_gradfilter_settings_are_refused_with_the_reason(kw, message):
    with pytest.raises(JobError, match=message):
        _gradfilter(**kw)


def test_a_filtered_plan_entry_takes_patch_and_optionally_compact_and_nothing_else():
    layers = [{"name": "conv", "kind": "conv", "index": 0, "update": "frozen"},
              {"name": "classifier", "kind": "linear", "index": None, "update": "frozen"}]
    plan = make_plan(layers, "fold", {0: {"update": "filtered", "patch": 2, "compact": True}})
    assert plan["layers"][0] == dict(layers[0], update="filtered", patch=2, compact=True)
    for bad in ({"update": "filtered", "patch": 2, "compact": False}, {"update": "filtered", "patch": 2, "dense": 1},
                {"update": "filtered", "patch": "2"}, {"update": "weight", "patch": 2}):
        with pytest.raises(ValueError, match="only convs take a dict update"):
            make_plan(layers, "fold", {0: bad})
    with pytest.raises(ValueError, match="only convs take a dict update"):
        make_plan(layers, "fold", {"classifier": {"update": "filtered", "patch": 2}})


def test_paired_mode_needs_a_filtered_plan_and_compiles_its_exact_twin():
    with pytest.raises(JobError, match="mode 'paired' times a gradient-filtered plan"):
        plan_for(method="bp-last-k", method_params={"k": 2}, mode="paired")
    plan = _gradfilter(mode="paired")
    twin = plan["twin"]
    assert twin == exact_twin(plan["update_plan"]) and twin["ops"] == "stock"
    exact = plan_for(method="bp-last-k", method_params={"k": 2})["update_plan"]
    assert twin["update_plan"] == exact  # the twin is bp-last-k of the same k
    assert _gradfilter()["twin"] is None


def test_single_conv_models_take_only_their_own_resolution():
    with pytest.raises(JobError, match="takes 7x7 inputs only; set the job's resolution to 7"):
        _gradfilter("conv3x3-c512-r7", k=1, resolution=8)


def test_counts_follow_the_gradfilter_papers_conventions_on_one_conv():
    """conv3x3-c64-r56, batch 2: exact weight gradient 2*B*C*C*H*W*9 FLOPs; filtered with r = 2 over
    28*28 patches C*C*(2*B*P - 1); the pooled input C*P*4 bytes per sample (no input gradient is
    counted for the earliest trained conv)."""
    c, size, batch, patches = 64, 56, 2, 28 * 28
    exact = analyze(plan_for(model="conv3x3-c64-r56", method="bp-last-k", method_params={"k": 1},
                             resolution=size, batch=batch))
    filtered = analyze(_gradfilter("conv3x3-c64-r56", k=1, resolution=size, batch=batch))
    assert exact["analytic_backward"]["gradfilter_flops"].value == 2 * batch * c * c * size * size * 9
    assert filtered["analytic_backward"]["gradfilter_flops"].value == c * c * (2 * batch * patches - 1)
    assert exact["memory_bytes"]["saved_inputs_fp32"].value == 4 * c * size * size
    assert filtered["memory_bytes"]["saved_inputs_fp32"].value == 4 * c * patches
    assert filtered["memory_bytes"]["saved_inputs_fp32"].per == "sample"


def test_input_gradients_after_the_first_filtered_conv_are_counted_per_patch():
    two = analyze(_gradfilter(k=2, resolution=128))["analytic_backward"]["gradfilter_flops"].value
    one = analyze(_gradfilter(k=1, resolution=128))["analytic_backward"]["gradfilter_flops"].value
    # conv 49 (depthwise, 336 channels on 4x4, 2x2 patches) adds its weight gradient, 336 * (2*1*4 - 1);
    # conv 50 (1x1, 336 -> 112) now needs its input gradient too, 1 * 4 * 336 * (2*112 - 1)
    assert two - one == 336 * (2 * 4 - 1) + 4 * 336 * (2 * 112 - 1)


@pytest.mark.parametrize("patch", [2, 4])
def test_odt_ops_keep_exactly_the_plans_fp32_bytes(patch):
    """Pooled inputs of the filtered convs, 1-bit masks of the ReLU6s a gradient passes, the
    classifier input: what ``plan_fp32`` counts is what the hooks and the allocator see."""
    result = analyze(_gradfilter(k=4, patch=patch, resolution=128))
    measured, planned = result["measured_saved_bytes"].value, result["memory_bytes"]["plan_fp32"].value
    assert measured == planned, (measured, planned)
    assert result["allocator_saved_bytes"].value == measured


def test_resnet18_last_four_give_the_papers_table_2_memory_and_the_ops_keep_what_is_counted():
    """The GradFilter paper's Table 2: ResNet-18 last 4, saved conv inputs 490 KB exact, 112 KB at
    r = 2 (fp32, per sample, 224x224). The op library keeps that plus 1-bit ReLU masks and the
    classifier input, which is ``plan_fp32``, to the byte."""
    filtered = analyze(_gradfilter("resnet18", k=4, resolution=224))
    exact = analyze(plan_for(model="resnet18", method="bp-last-k", method_params={"k": 4}, resolution=224))
    assert exact["memory_bytes"]["saved_inputs_fp32"].value == 490 * 1024
    assert filtered["memory_bytes"]["saved_inputs_fp32"].value == 112 * 1024
    kept = filtered["measured_saved_bytes"].value
    assert kept == filtered["allocator_saved_bytes"].value == filtered["memory_bytes"]["plan_fp32"].value
    assert kept < 0.25 * exact["measured_saved_bytes"].value


def test_analyze_takes_last_k_and_patch(capsys):
    assert main(["analyze", "--model", "mbv2-w0.35", "--method", "gradfilter", "--last-k", "2", "--patch", "4",
                 "--ops", "odt", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["method_params"] == {"k": 2, "patch": 4}
    assert out["memory_bytes"]["saved_inputs_fp32"]["per"] == "sample"
    assert out["analytic_backward"]["gradfilter_flops"]["unit"] == "FLOP"


def test_a_paired_cell_runs_both_arms_interleaved_and_reports_the_speedup(tmp_path):
    results, report = tmp_path / "results", tmp_path / "report"
    assert main(["run", "--model", "conv3x3-c512-r7-cl", "--method", "gradfilter", "--k", "1", "--patch", "2",
                 "--resolution", "7", "--batch", "2", "--ops", "odt", "--mode", "paired", "--steps", "4",
                 "--warmup", "1", "--results", str(results), "--report", str(report)]) == 0
    (journal,) = (results / "local").glob("*.jsonl")
    (record,) = [json.loads(line) for line in journal.read_text().splitlines()]
    assert record["status"] == "ok", record.get("error")
    m = record["measurement"]
    assert m["paired"]["order"] == "ABBA"
    assert len(m["paired"]["exact"]["backward_ns"]) == len(m["samples"]["backward_ns"]) >= 4
    assert all(t > 0 for t in m["paired"]["exact"]["step_ns"])
    faults = m["paired"]["minor_faults"]
    assert len(faults["plan"]) == len(faults["exact"]) == len(m["samples"]["backward_ns"])
    assert all(isinstance(n, int) and n >= 0 for n in faults["plan"] + faults["exact"])
    assert "both arms" in m["figures"]["train_peak_bytes"]["how"]
    text = (report / "report.md").read_text()
    assert "## Gradient filtering against exact backprop (paired)" in text
    assert "conv3x3-c512-r7-cl-gradfilter(k=1,patch=2)+odt" in text
    (row,) = parse_table(section(text, "Gradient filtering against exact backprop"))
    assert row["exact faults/step"] == f"{statistics.median(faults['exact']):,.0f}"
    assert row["filtered faults/step"] == f"{statistics.median(faults['plan']):,.0f}"


def test_filtered_training_moves_the_filtered_weights_and_nothing_earlier():
    model = prepared_model(_gradfilter(k=2, resolution=64, batch=2))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = [p for p in model.parameters() if p.requires_grad]
    torch.nn.functional.cross_entropy(model(torch.randn(2, 3, 64, 64)), torch.tensor([0, 1])).backward()
    torch.optim.SGD(params, lr=0.1).step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed == {"blocks.16.dw.conv.weight", "blocks.16.dw.conv.bias", "blocks.16.pw2.conv.weight",
                       "blocks.16.pw2.conv.bias", "classifier.weight", "classifier.bias"}


def test_the_compact_variant_trains_pair_values_into_the_same_weights_and_keeps_the_same_bytes():
    """gradfilter-compact: the plan of gradfilter with compact filtered convs, the same exact twin,
    the same saved bytes; the trainer's steps end in the same weights, no step left in a delta."""
    dense_plan, compact_plan = (_gradfilter(k=3, resolution=64, batch=2, method=m, mode="paired")
                                for m in ("gradfilter", "gradfilter-compact"))
    filtered = [layer for layer in compact_plan["update_plan"]["layers"] if layer["update"] == "filtered"]
    assert len(filtered) == 3 and all(layer["compact"] is True for layer in filtered)
    assert compact_plan["twin"] == dense_plan["twin"]
    saved = [analyze(plan)["measured_saved_bytes"].value for plan in (dense_plan, compact_plan)]
    assert saved[0] == saved[1] > 0
    x, y = torch.randn(2, 3, 64, 64), torch.tensor([0, 1])
    models_ = [prepared_model(plan) for plan in (dense_plan, compact_plan)]
    for model in models_:
        trainer = Trainer(model, [p for p in model.parameters() if p.requires_grad], lr=0.05)
        for _ in range(3):
            trainer.step(x, y)
    trained = [name for name, p in models_[1].named_parameters() if p.requires_grad]
    assert "blocks.16.pw2.conv.delta" in trained and "blocks.16.pw2.conv.weight" not in trained
    deltas = [m.delta for m in models_[1].modules() if isinstance(m, FilteredConv2d)]
    assert len(deltas) == 3 and all(torch.count_nonzero(d) == 0 for d in deltas)  # the trainer folded them
    initial, dense_state, compact_state = (m.state_dict() for m in [prepared_model(dense_plan)] + models_)
    assert set(compact_state) - set(dense_state) == {"blocks.%s.conv.delta" % n for n in ("16.pw1", "16.dw", "16.pw2")}
    for name, value in dense_state.items():
        torch.testing.assert_close(compact_state[name], value, rtol=1e-5, atol=1e-6)
    assert sum(name.endswith("conv.weight") and not torch.equal(value, initial[name])
               for name, value in compact_state.items()) == 3


@pytest.mark.parametrize("patch,share", [(2, 0.30), (4, 0.10)])
def test_a_single_filtered_conv_keeps_its_pooled_input_and_nothing_hidden(patch, share):
    """conv3x3-c64-r56 at batch 2: the hooks and the allocator see the pooled input and the
    classifier's input only (the fixed output gradient is made in backward), at most 30% (r = 2) and
    10% (r = 4) of what the exact conv keeps."""
    batch, pooled = 2, 64 * math.ceil(56 / patch) ** 2
    filtered = analyze(_gradfilter("conv3x3-c64-r56-cl", k=1, patch=patch, resolution=56, batch=batch))
    exact = analyze(plan_for(model="conv3x3-c64-r56-cl", method="bp-last-k", method_params={"k": 1},
                             resolution=56, batch=batch))
    kept = filtered["measured_saved_bytes"].value
    assert kept == filtered["allocator_saved_bytes"].value == batch * 4 * (pooled + 64)
    assert kept == batch * filtered["memory_bytes"]["plan_fp32"].value
    assert kept <= share * exact["measured_saved_bytes"].value
