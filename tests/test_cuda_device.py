"""The ``device`` job field: validation, cell ids and plans; a cuda cell on a machine without a GPU
fails alone and clearly; and, where a GPU exists, the real CUDA paths (skipped elsewhere)."""
import hashlib
import io
import json
import tomllib

import pytest
import torch

from harness import protocol
from harness.agent import Agent
from harness.cache import ArtifactCache
from harness.compile import compile_job
from harness.job import MEASURED_FIELDS, Job, JobError
from harness.journal import Journal, read_journal
from harness.plan import jobs_from
from harness.runner import Runner
from targets.local import LocalTarget
from tests.helpers import plan_for

needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: torch.cuda.is_available() is False")

TWO_CELLS = """
[defaults]
resolution = 32
steps = 2
warmup = 1
[[cells]]
model = "mbv2-w0.35"
method = "last-layer"
device = ["cuda", "cpu"]
"""


def _session(plan):
    out = io.StringIO()
    status = Agent(out, str(ArtifactCache().objects)).serve(
        protocol.encode(m) for m in ({"type": "hello", "protocol": 1}, {"type": "load", "plan": plan},
                                     {"type": "run"}, {"type": "bye"}))
    return status, [json.loads(line) for line in out.getvalue().splitlines()]


@pytest.mark.parametrize("kw,message", [
    (dict(device="gpu"), "job field 'device' is 'gpu'; known: cpu, cuda"),
])
def test_bad_device_settings_are_refused(kw, message):
    with pytest.raises(JobError, match=message):
        Job(model="mbv2-w0.35", method="full", **kw)


def test_cuda_joins_the_label_and_the_cell_id_while_cpu_keeps_the_old_id():
    base = Job(model="mbv2-w0.35", method="bias-only")
    before = {k: getattr(base, k) for k in MEASURED_FIELDS}  # the id as computed before the field existed
    blob = json.dumps(before, sort_keys=True, separators=(",", ":")).encode()
    assert base.cell_id == Job(model="mbv2-w0.35", method="bias-only", device="cpu").cell_id
    assert base.cell_id == "c" + hashlib.sha256(blob).hexdigest()[:12]
    cuda = Job(model="mbv2-w0.35", method="bias-only", device="cuda", threads=2)
    assert cuda.cell_id != base.cell_id
    assert cuda.label == "bias-only+cuda" and base.label == "bias-only"
    assert Job(model="mbv2-w0.35", method="bias-only", numeric="int8", device="cuda").label == "bias-only+int8+cuda"
    assert cuda.name == "mbv2-w0.35-bias-only+cuda-synthetic-r128-b1"
    assert Job.from_json(cuda.to_json()) == cuda


def test_the_plan_carries_the_device():
    assert plan_for(method="last-layer", resolution=32)["device"] == "cpu"
    assert plan_for(method="last-layer", resolution=32, device="cuda")["device"] == "cuda"


def test_a_plan_from_before_the_field_runs_on_the_cpu():
    plan = plan_for(method="last-layer", resolution=32, steps=1, warmup=0)
    del plan["device"]
    status, replies = _session(plan)
    assert status == 0 and replies[-1]["type"] == "result"
    assert "cuda_train_max_allocated_bytes" not in replies[-1]["memory"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU: its cuda cells run")
def test_a_cuda_cell_without_a_gpu_fails_clearly_and_alone(tmp_path):
    target = LocalTarget()
    journal = Journal(tmp_path / "run.jsonl")
    summary = Runner(target, target.cache, journal, "run", "two").run(jobs_from(tomllib.loads(TWO_CELLS)))
    assert (summary.ok, summary.failed) == (1, 1)
    records, _ = read_journal(journal.path)
    failed, ok = records
    assert failed["job"]["device"] == "cuda" and failed["status"] == "failed"
    assert failed["error"]["failure"] == "device-error"
    message = failed["error"]["message"]
    assert "during load" in message and "job field 'device' is 'cuda'" in message
    assert torch.__version__ in message
    if torch.version.cuda is None:
        assert "a CPU-only build (torch.version.cuda is None)" in message
    assert ok["job"]["device"] == "cpu" and ok["status"] == "ok"
    assert ok["measurement"]["samples"]["step_ns"] and "cuda_train_peak_bytes" not in ok["measurement"]["figures"]
    assert ok["device"]["cuda_version"] == torch.version.cuda and ok["device"]["gpu"] is None


@needs_gpu
def test_a_cuda_cell_trains_on_the_gpu_with_its_peak_and_timings(tmp_path):
    target = LocalTarget()
    journal = Journal(tmp_path / "run.jsonl")
    jobs = [Job(model="mbv2-w0.35", method="bp-last-k", method_params={"k": 2}, resolution=32, steps=3,
                warmup=1, device="cuda")]
    summary = Runner(target, target.cache, journal, "run", "cuda").run(jobs)
    assert summary.ok == 1, summary.failures
    (record,), _ = read_journal(journal.path)
    figures, samples = record["measurement"]["figures"], record["measurement"]["samples"]
    peak = figures["cuda_train_peak_bytes"]
    assert peak["value"] > 0 and peak["source"] == "measured" and "max_memory_allocated" in peak["how"]
    assert len(samples["step_ns"]) == record["measurement"]["calibration"]["timed_steps"] >= 3
    for part in ("forward_ns", "backward_ns", "update_ns"):
        assert all(t > 0 for t in samples[part]), part
    assert record["device"]["gpu"] == torch.cuda.get_device_name()
    assert record["device"]["cuda_version"] == torch.version.cuda


@needs_gpu
@pytest.mark.parametrize("kw", [
    dict(method="sparse-update", method_params={"preset": "49kb"}),  # channel masks live with the model
    dict(method="bias-only", numeric="int8"),  # QAS scales live with the model
    dict(method="last-layer", data="mnist5k-transfer", batch=8),  # evaluation batches on the GPU too
    dict(method="last-layer", mode="overhead"),
])
def test_cuda_cells_of_every_kind_run(kw):
    status, replies = _session(plan_for(resolution=32, steps=2, warmup=1, device="cuda", **kw))
    assert status == 0, replies[-1]
    result = replies[-1]
    assert result["memory"]["cuda_train_max_allocated_bytes"] > result["memory"]["cuda_train_start_allocated_bytes"]
    if kw.get("data"):
        assert result["accuracy"]["before"] is not None and result["accuracy"]["after"] is not None
    if kw.get("mode") == "overhead":
        assert all(r < t for r, t in zip(result["overhead"]["reported_ns"], result["overhead"]["instrumented_ns"]))
