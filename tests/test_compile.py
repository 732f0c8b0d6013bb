import hashlib

import pytest
import torch

from harness.cache import ArtifactCache
from harness.compile import compile_job
from harness.job import Job, JobError
from suites import models
from targets.local import LocalTarget
from harness.target import TargetError


def _job(**kw):
    return Job(**dict({"model": "mbv2-w0.35", "method": "last-layer", "data": "mnist5k-transfer",
                       "resolution": 32, "steps": 2, "warmup": 0}, **kw))


def test_plan_is_fully_resolved_json():
    plan = compile_job(Job(model="mcunet-5fps", method="bp-last-k", method_params={"k": 3}),
                       ArtifactCache())
    layers = plan["update_plan"]["layers"]
    assert len(layers) == 43 and layers[-1]["name"] == "classifier"
    assert [l["update"] for l in layers[-4:]] == ["weight"] * 4
    assert plan["model"]["spec"]["blocks"] and plan["data"]["kind"] == "synthetic"
    assert plan["seeds"]["derivation"]


def test_a_users_checkpoint_is_hashed_into_the_cache(tmp_path):
    path = tmp_path / "mine.pt"
    torch.save(models.build(models.spec("mbv2-w0.35"), 3).state_dict(), path)
    plan = compile_job(_job(checkpoint=str(path)), ArtifactCache())
    assert plan["checkpoint"] == hashlib.sha256(path.read_bytes()).hexdigest()
    run = LocalTarget().run(plan, timeout_s=120)
    assert run.result["accuracy"]["after"] is not None


def test_a_checkpoint_of_another_model_is_refused_before_it_reaches_a_device(tmp_path):
    path = tmp_path / "other.pt"
    torch.save(models.build(models.spec("mcunet-5fps"), 3).state_dict(), path)
    with pytest.raises(JobError, match="does not fit model 'mbv2-w0.35': checkpoint .* lacks .* backbone tensors"):
        compile_job(_job(checkpoint=str(path)), ArtifactCache())


def test_the_device_refuses_a_checkpoint_that_does_not_fit(tmp_path):
    plan = compile_job(_job(), ArtifactCache())
    plan["checkpoint"] = ArtifactCache().put_torch(models.build(models.spec("mcunet-5fps"), 3).state_dict())
    with pytest.raises(TargetError, match="lacks .* backbone tensors"):
        LocalTarget().run(plan, timeout_s=120)


def test_full_at_batch_1_with_1x1_feature_maps_is_refused_before_it_reaches_a_device():
    with pytest.raises(JobError, match="batch 1 at resolution 32 reaches 1x1"):
        compile_job(Job(model="mbv2-w0.35", method="full", resolution=32), ArtifactCache())
    compile_job(Job(model="mbv2-w0.35", method="full", resolution=32, batch=2), ArtifactCache())


@pytest.mark.parametrize("content,text", [(None, "does not exist"),
                                          (b"not a checkpoint", "cannot be loaded with weights_only")])
def test_bad_checkpoint_files_are_named(tmp_path, content, text):
    path = tmp_path / "bad.pt"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(JobError, match="bad.pt .*" + text):
        compile_job(_job(checkpoint=str(path)), ArtifactCache())
