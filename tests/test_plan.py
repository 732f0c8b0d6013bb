import pytest

from harness.job import Job, JobError
from harness.plan import PlanError, apply_overrides, jobs_from, load_plan, plan_names


def _doc(**cells):
    return {"cells": [dict({"model": "mbv2-w0.35", "method": "full"}, **cells)]}


def test_shipped_plans_load():
    assert {"quick", "default"} <= set(plan_names())
    default = load_plan("default")
    methods = {j.method for j in default.jobs}
    assert methods == {"full", "last-layer", "bias-only", "bp-last-k", "sparse-update"}
    assert {j.data for j in default.jobs} == {"synthetic", "mnist5k-transfer"}
    assert len({j.model for j in default.jobs}) >= 2
    assert any(j.resolution == 128 and j.data == "synthetic" for j in default.jobs)


def test_blocks_are_products_and_method_parameters_are_axes():
    doc = {"defaults": {"steps": 3}, "methods": {"bp-last-k": {"k": [2, 4]}},
           "cells": [{"model": ["mbv2-w0.35", "mcunet-5fps"], "method": ["full", "bp-last-k"]}]}
    jobs = jobs_from(doc)
    assert len(jobs) == 2 * (1 + 2)
    assert {j.label for j in jobs} == {"full", "bp-last-k(k=2)", "bp-last-k(k=4)"}
    assert all(j.steps == 3 for j in jobs)


@pytest.mark.parametrize("doc,text", [
    ({"cells": [], "colour": 1}, "unknown key 'colour'"),
    ({"defaults": {"stepz": 1}, **_doc()}, r"\[defaults\]: unknown key 'stepz'"),
    (_doc(resolutoin=1), r"\[\[cells\]\] #1: unknown key 'resolutoin'"),
    (_doc(model="resnet-9000"), "unknown model 'resnet-9000'; known models: .*mbv2-w0.35"),
    (_doc(method="magic"), "unknown method 'magic'; known methods: bias-only, bp-last-k, full"),
    ({"cells": [{"model": "mbv2-w0.35", "method": "bp-last-k"}]}, "needs parameter 'k'"),
    ({"methods": {"full": {"k": 1}}, **_doc()}, "method 'full' has no parameter 'k'"),
    (_doc(data="imagenet"), "unknown data 'imagenet'"),
    (_doc(batch=0), "'batch' must be a positive integer"),
    (_doc(mode="turbo"), "'mode' is 'turbo'"),
    ({"cells": []}, "no cells"),
])
def test_bad_plans_name_the_file_and_key(doc, text):
    with pytest.raises(PlanError, match=text) as err:
        jobs_from(doc, "my.toml")
    assert str(err.value).startswith("my.toml")


def test_plan_files_errors(tmp_path):
    with pytest.raises(PlanError, match="unknown plan 'nope'; known plans: .*quick"):
        load_plan("nope")
    bad = tmp_path / "bad.toml"
    bad.write_text("[[cells]\nmodel=")
    with pytest.raises(PlanError, match="bad.toml is not valid TOML"):
        load_plan(str(bad))


def test_cell_id_hashes_what_is_measured_only():
    base = Job(model="mbv2-w0.35", method="full")
    assert Job(model="mbv2-w0.35", method="full", threads=2, warmup=9, timeout_s=5).cell_id == base.cell_id
    for change in ({"steps": 21}, {"model": "mcunet-5fps"}, {"seed": 1}, {"batch": 2},
                   {"mode": "energy"}, {"data": "mnist5k-transfer"}):
        assert Job(**dict({"model": "mbv2-w0.35", "method": "full"}, **change)).cell_id != base.cell_id
    assert Job(model="m", method="bp-last-k", method_params={"k": 2}).cell_id != \
        Job(model="m", method="bp-last-k", method_params={"k": 3}).cell_id


def test_a_rate_written_as_an_integer_is_the_same_cell():
    # --set lr=[0.3,1] against a plan's lr = [0.3, 1.0]: one cell, so --resume skips it
    assert Job(model="m", method="full", lr=1).cell_id == Job(model="m", method="full", lr=1.0).cell_id
    assert Job(model="m", method="full", lr=1).lr == 1.0
    with pytest.raises(JobError, match="'lr'"):
        Job(model="m", method="full", lr=True)


def test_a_block_may_set_its_own_method_parameters_and_set_still_overrides_them():
    doc = {"methods": {"bp-last-k": {"k": 2}},
           "cells": [{"model": "mbv2-w0.35", "method": "bp-last-k"},
                     {"model": "mbv2-w0.35", "method": "bp-last-k", "methods": {"bp-last-k": {"k": [4, 6]}}}]}
    assert [j.method_params["k"] for j in jobs_from(doc)] == [2, 4, 6]
    assert [j.method_params["k"] for j in jobs_from(apply_overrides(doc, {"bp-last-k.k": 3}))] == [3]
    assert doc["cells"][1]["methods"]["bp-last-k"]["k"] == [4, 6]  # the document itself is unchanged
