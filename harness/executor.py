"""Executes an ExecutionPlan with torch (device side): build, apply the plan, train, report.

Everything the host resolved arrives in the plan; artifacts (checkpoint, dataset) are files named
by sha256 in ``artifacts_dir`` and are verified before use. ``emit`` receives protocol messages.
Only the clock runs inside timed steps; memory, accuracy and message I/O happen between them.
"""
import hashlib
import os

import torch

from suites.data import make_batches
from suites.methods import apply_plan
from suites.models import build
from suites.train import Trainer, accuracy

from . import device_info


class ExecutionError(RuntimeError):
    pass


def _artifact(artifacts_dir, sha):
    path = os.path.join(artifacts_dir, sha)
    if not os.path.isfile(path):
        raise ExecutionError("artifact %s is missing from %s" % (sha, artifacts_dir))
    with open(path, "rb") as f:
        digest = hashlib.sha256(f.read()).hexdigest()
    if digest != sha:
        raise ExecutionError("artifact %s is corrupt (its content hashes to %s)" % (sha, digest))
    return torch.load(path, weights_only=True)


def load_backbone(model, state, name):
    """Load every non-classifier tensor of ``state`` into ``model``; the classifier stays fresh."""
    backbone = {k: v for k, v in state.items() if not k.startswith("classifier.")}
    missing = [k for k in model.state_dict() if k not in backbone and not k.startswith("classifier.")]
    if missing:
        raise ExecutionError("checkpoint %s lacks %d backbone tensors, e.g. %s"
                             % (name, len(missing), missing[0]))
    model.load_state_dict(backbone, strict=False)


def prepare_model(plan, state=None):
    """The plan's model, seeded, with the checkpoint ``state`` if any, and the plan applied."""
    torch.manual_seed(plan["seeds"]["init"])
    model = build(plan["model"]["spec"], plan["model"]["num_classes"])
    if state is not None:
        load_backbone(model, state, plan["checkpoint"][:12])
    return model, apply_plan(model, plan["update_plan"], plan["ops"])


class Execution:
    def __init__(self, plan, artifacts_dir, clock):
        self.plan = plan
        self.clock = clock
        torch.set_num_threads(plan["threads"])
        state = _artifact(artifacts_dir, plan["checkpoint"]) if plan.get("checkpoint") else None
        self.model, params = prepare_model(plan, state)
        data = plan["data"]
        arrays = _artifact(artifacts_dir, data["artifact"]) if data.get("artifact") else None
        schedule = plan["schedule"]
        self.batches = make_batches(data, schedule["batch"], plan["seeds"]["data"], arrays)
        self.trainer = Trainer(self.model, params, schedule["lr"], schedule["momentum"], clock=clock)

    def _region(self, emit, event, name):
        emit({"type": "region", "event": event, "name": name, "t": self.clock()})

    def _steps(self, emit, phase, count, buffer):
        for i in range(count):
            x, y = self.batches.next()
            msg = {"type": "step", "i": i, "phase": phase, "t": list(self.trainer.step(x, y))}
            if buffer is None:
                emit(msg)
            else:
                buffer.append(msg)

    def _accuracy(self, emit, name):
        if not self.batches.has_labels:
            return None
        self._region(emit, "start", name)
        value = accuracy(self.model, self.batches.evaluation())
        self._region(emit, "stop", name)
        return value

    def run(self, emit):
        schedule = self.plan["schedule"]
        # energy mode marks one long window with no I/O inside it; steps are sent after it closes
        buffer = [] if self.plan["mode"] == "energy" else None
        before = self._accuracy(emit, "eval-before")
        self._region(emit, "start", "warmup")
        self._steps(emit, "warmup", schedule["warmup"], buffer)
        self._region(emit, "stop", "warmup")
        hwm_before = device_info.status_bytes("VmHWM") or 0
        trimmed = device_info.trim_heap()
        start_rss = device_info.status_bytes("VmRSS")
        reset_ok = device_info.reset_peak_rss()
        self._region(emit, "start", "timed")
        self._steps(emit, "timed", schedule["steps"], buffer)
        self._region(emit, "stop", "timed")
        train_hwm = device_info.status_bytes("VmHWM") if reset_ok else None
        for msg in buffer or ():
            emit(msg)
        after = self._accuracy(emit, "eval-after")
        return {
            "type": "result",
            "memory": {"peak_rss_bytes": max(hwm_before, device_info.status_bytes("VmHWM") or 0) or None,
                       "train_start_rss_bytes": start_rss,
                       "train_hwm_bytes": train_hwm,
                       "hwm_reset": reset_ok,
                       "heap_trimmed": trimmed},
            "accuracy": {"before": before, "after": after},
        }
