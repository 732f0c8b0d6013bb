"""The SparseUpdate scheme search: the optimum of a hand-checkable toy, the released presets beaten
on a table of mbv2-w0.35, budgets with units, and the contribution analysis end to end (tiny)."""
import itertools
import json
import random

import pytest
import torch

from suites.counts import Int8Memory, analytic_counts
from harness.cache import ArtifactCache
from harness.cli import main
from harness.compile import compile_job
from harness.contributions import FORMAT, Analysis, load_table
from harness.job import Job
from harness.sparse_search import RATIOS, BudgetError, Contributions, Search, channels
from suites.quantities import parse_bytes
from suites import models
from tests.helpers import plan_for

# Three convs of 8 channels; bytes: classifier 100, each conv's mask and bias 100, a weight at
# ratio r adds r * (125, 250, 500). The gains grow with the square root of the ratio.
TOY = Int8Memory(mask_and_bias_bits=(800, 800, 800), weight_elements=(1000, 2000, 4000), widths=(8, 8, 8),
                 classifier_bits=800)
TOY_GAINS = Contributions({0: 0.0, 1: 1.0, 2: 1.5, 3: 1.6},
                          {(conv, r): base * r ** 0.5 for conv, base in ((0, 0.5), (1, 2.0), (2, 3.0)) for r in RATIOS})


def test_the_toy_optimum_is_found():
    # 600 B: the last 2 biases (300 B) and conv 1 at 1/8 (250/8 = 31 B) score 1.5 + 2/sqrt(8) = 2.207;
    # nothing else fits that scores more (checked exhaustively below)
    search = Search(TOY, TOY_GAINS, 600, seed=1)
    best = search.run(population=20, evaluations=500)
    assert (best.n_bias, best.ratios, best.bytes) == (2, (0, 0.125, 0), 331 + 219)
    assert best.score == pytest.approx(1.5 + 2.0 / 8 ** 0.5)
    exhaustive = max((c for n in TOY_GAINS.bias for rs in itertools.product((0,) + RATIOS, repeat=3)
                      for c in [Search(TOY, TOY_GAINS, 600).evaluate(n, rs)] if c.bytes <= 600),
                     key=lambda c: c.score)
    assert (exhaustive.n_bias, exhaustive.ratios) == (best.n_bias, best.ratios)


def test_a_budget_below_the_classifier_alone_is_refused():
    with pytest.raises(BudgetError, match="below the 100 B the classifier alone needs"):
        Search(TOY, TOY_GAINS, 99)


def _mbv2_table(seed=7):
    """Deterministic made-up gains on mbv2-w0.35: concave in the bias depth, random per weight."""
    n = 51
    rng = random.Random(seed)
    bias = {k: (1 - 0.93 ** k) * 8 for k in range(n + 1)}
    weights = {(i, r): rng.uniform(0, 1) * r ** 0.5 * (1 + i / n) for i in range(n // 2, n) for r in RATIOS}
    return Contributions(bias, weights)


@pytest.mark.parametrize("label", list(models.sparse_update_schemes("mbv2-w0.35")))
def test_the_search_matches_or_beats_each_released_preset_within_its_own_bytes(label):
    memory = Int8Memory.of(models.spec("mbv2-w0.35"), 10, 128)
    scheme = models.sparse_update_schemes("mbv2-w0.35")[label]
    weights = {i: channels(memory.widths[i], r) for i, r in zip(scheme["manual_weight_idx"], scheme["weight_update_ratio"]) if r}
    budget = memory.scheme_bytes(scheme["n_bias_update"], weights)
    assert budget == analytic_counts(plan_for(method="sparse-update", method_params={"preset": label}),
                                     torch.zeros(1, 3, 128, 128))["sparseupdate_int8"]
    search = Search(memory, _mbv2_table(), budget, seed=0)
    released = search.score_of(scheme)
    best = search.run()
    assert search.evaluated >= 5000
    assert best.bytes <= budget and best.score >= released.score


@pytest.mark.parametrize("text,expected", [("100KiB", 102400), ("0.1MB", 100000), ("512 B", 512), ("1.5MiB", 1572864)])
def test_sizes_carry_units(text, expected):
    assert parse_bytes(text) == expected


@pytest.mark.parametrize("budget,message", [
    ("100", "--budget '100' needs a number and a unit, e.g. 100KiB"),
    ("100kib", "needs a number and a unit"),
    ("50B", "is below the 112 B that training mbv2-w0.35's classifier alone needs at 128 px"),
])
def test_bad_budgets_exit_2_naming_the_problem(budget, message, capsys):
    assert main(["search-sparse", "--model", "mbv2-w0.35", "--budget", budget]) == 2
    assert message in capsys.readouterr().err


def test_a_searched_preset_file_runs_as_a_sparse_update_preset(tmp_path, capsys):
    table = {"format": FORMAT, "version": 1, "recipe": {"model": "mbv2-w0.35"},
             "bias": {str(k): v for k, v in _mbv2_table().bias.items()},
             "weights": {"%d:%g" % key: v for key, v in _mbv2_table().weights.items()}}
    (tmp_path / "table.json").write_text(json.dumps(table))
    out = tmp_path / "mine.json"
    assert main(["search-sparse", "--model", "mbv2-w0.35", "--budget", "100KiB", "--table", str(tmp_path / "table.json"),
                 "-o", str(out), "--evaluations", "1000"]) == 0
    preset = json.loads(out.read_text())
    assert preset["sparseupdate_int8_bytes"] <= 102400 == preset["budget_bytes"]
    assert preset["search"]["evaluated"] >= 1000
    err = capsys.readouterr().err
    assert "released preset 99kb on this table" in err
    plan = compile_job(Job(model="mbv2-w0.35", method="sparse-update", method_params={"preset": str(out)}), ArtifactCache())
    counts = analytic_counts(plan, torch.zeros(1, 3, 128, 128))
    assert counts["sparseupdate_int8"] == preset["sparseupdate_int8_bytes"]


def test_the_contribution_analysis_measures_each_configuration_on_held_out_training_images():
    analysis = Analysis("mbv2-w0.35", ArtifactCache(), resolution=32, batch=8, steps=2, candidates=[50], depths=[0, 3])
    table = analysis.run()
    contributions, recipe = load_table(table, "test")
    assert set(contributions.bias) == {0, 3} and contributions.bias[0] == 0
    assert set(contributions.weights) == {(50, r) for r in RATIOS}
    assert table["baseline"]["classifier_only"] is not None and recipe["steps"] == 2
    assert all(-1 <= v <= 1 for v in list(contributions.bias.values()) + list(contributions.weights.values()))
