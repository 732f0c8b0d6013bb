"""The local target against real child processes: the agent, and stand-in interpreters that
crash or hang the way a broken device would."""
import os
import time

import pytest

from harness.cache import ArtifactCache
from harness.target import Failure, Target, TargetError
from targets.local import LocalTarget
from tests.helpers import plan_for, stand_in_python


def test_runs_a_plan_in_a_fresh_agent():
    target = LocalTarget()
    assert isinstance(target, Target)
    described = target.describe()
    assert described["memory_capacity_bytes"] > 0 and described["torch"]
    probe = described["probe"]
    assert probe["copy_bytes_per_s"] > 0 and probe["gemm_flop_per_s"] > 0 and probe["op_dispatch_ns"] > 0
    assert probe["threads"] == described["torch_threads"]
    run = target.run(plan_for(method="bp-last-k", resolution=32, steps=3, warmup=1), timeout_s=120)
    phases = [s["phase"] for s in run.steps]
    calibration = run.result["calibration"]
    assert phases == ["warmup"] * calibration["warmup_steps"] + ["timed"] * calibration["timed_steps"]
    assert run.result["placement"]["threads"] == 1
    for step in run.steps:
        t = step["t"]
        assert t[0] <= t[1] <= t[2] <= t[3] and isinstance(t[0], int)
    names = [(r["event"], r["name"]) for r in run.regions]
    assert ("start", "timed") in names and ("stop", "timed") in names
    assert run.result["memory"]["peak_rss_bytes"] > 0


def test_a_crashing_device_is_reported_with_its_stderr(tmp_path):
    python = stand_in_python(tmp_path, 'echo "Illegal instruction (core dumped)" >&2; exit 132')
    with pytest.raises(TargetError, match="closed the stream") as err:
        LocalTarget(python=python).run({}, timeout_s=30)
    assert err.value.failure is Failure.CRASH
    assert "Illegal instruction" in err.value.detail


def test_a_hanging_device_is_killed_at_the_timeout(tmp_path):
    pidfile = tmp_path / "pid"
    python = stand_in_python(tmp_path, "echo $$ > %s; exec sleep 600" % pidfile)
    started = time.monotonic()
    with pytest.raises(TargetError, match="timeout") as err:
        LocalTarget(python=python).run({}, timeout_s=1.5)
    assert err.value.failure is Failure.TIMEOUT
    assert time.monotonic() - started < 15
    pid = int(pidfile.read_text())
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_a_corrupt_artifact_is_refused_by_the_device():
    plan = plan_for(method="last-layer", data="mnist5k-transfer", resolution=32, steps=1, warmup=0)
    path = ArtifactCache().path(plan["data"]["artifact"])
    original = path.read_bytes()
    try:
        path.write_bytes(original[:-10] + b"0123456789")
        with pytest.raises(TargetError, match="is corrupt") as err:
            LocalTarget().run(plan, timeout_s=120)
        assert err.value.failure is Failure.DEVICE_ERROR
    finally:
        path.write_bytes(original)


def test_a_device_error_names_what_failed():
    plan = plan_for(method="last-layer", resolution=32)
    plan["update_plan"]["layers"][0]["name"] = "no.such.layer"
    with pytest.raises(TargetError, match="during load: .*no.such.layer"):
        LocalTarget().run(plan, timeout_s=120)
