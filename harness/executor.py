"""Executes an ExecutionPlan with torch (device side): build, apply the plan, train, report.

Everything the host resolved arrives in the plan; artifacts (checkpoint, dataset) are files named
by sha256 in ``artifacts_dir`` and are verified before use. ``emit`` receives protocol messages.
Only the clock runs inside timed steps; memory, accuracy and message I/O happen between them.

With ``device = "cuda"`` the model and every batch live on the GPU (batches are made on the CPU
and copied before a step's first stamp) and the clock synchronises before each reading, so every
region holds its GPU work; the CPU path has no synchronisation and no extra branch in a step.
"""
import copy
import hashlib
import os
try:
    import resource
except ImportError:  # not on Unix: no page-fault counts
    resource = None

import torch

from suites.data import make_batches
from suites import quant
from suites.fewshot import prototype_head
from suites.methods import PlanContext, apply_plan, fold_batchnorm, layer_table
from suites.methods.tinytrain import full_forward_backward, select
from suites.models import build
from suites.ops import native
from suites.train import Trainer, accuracy

from . import calibrate, device_info, syschecks


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


CALIBRATION_SAMPLES = 16
SELECTION_REPEATS = 5
"""Timed runs of an on-device selection (after one untimed), each beside one reference pass."""


def calibration_batch(plan, arrays=None):
    """The inputs that set the int8 graph's activation scales: training images drawn with the
    calibration seed (host analysis, which has no dataset, uses synthetic tensors of the same
    shape: scales change values, not what is saved or counted)."""
    spec = plan["data"] if arrays is not None else dict(plan["data"], kind="synthetic")
    return make_batches(spec, CALIBRATION_SAMPLES, plan["seeds"]["data"] + 1, arrays).next()[0]


def build_model(plan, state=None, arrays=None, device="cpu"):
    """The plan's model before its update plan: seeded, with the checkpoint ``state`` if any, the
    episode's prototype classifier (episode data, where the arrays are given), as the int8 graph
    where the plan's numeric format asks (``suites.quant``), moved to ``device``."""
    torch.manual_seed(plan["seeds"]["init"])
    model = build(plan["model"]["spec"], plan["model"]["num_classes"])
    if state is not None:
        load_backbone(model, state, plan["checkpoint"][:12])
    if arrays is not None and plan["data"]["kind"] == "episode":
        prototype_head(model, *make_batches(plan["data"], 1, 0, arrays).support_set())
    if plan.get("numeric", "fp32") != "fp32":
        model = quant.int8_graph(fold_batchnorm(model), calibration_batch(plan, arrays))
    return model.to(device)


def apply_update(model, plan, update_plan):
    """Apply ``update_plan`` (with QAS for ``int8``) where the model lives, so that the tensors
    the plan creates (channel masks, QAS scales) live with it; the trainable parameters."""
    params = apply_plan(model, update_plan, plan["ops"])
    if plan.get("numeric", "fp32") == "int8":
        quant.apply_qas(model)
    return params


def prepare_model(plan, state=None, arrays=None, device="cpu"):
    """``(model, trainable parameters)``: ``build_model`` with the plan's update plan applied."""
    model = build_model(plan, state, arrays, device)
    return model, apply_update(model, plan, plan["update_plan"])


def place(threads, cpus=None):
    """Pin this process to ``cpus`` (default: the last ``threads`` CPUs it may use; CPU 0 often
    serves interrupts) and fix torch's thread count; the placement as run."""
    pinned = None
    if hasattr(os, "sched_setaffinity"):
        allowed = sorted(os.sched_getaffinity(0))
        chosen = list(cpus) if cpus else allowed[-threads:]
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:
            raise ExecutionError("cpus %s are not available to the agent; it may use %s"
                                 % (unknown, allowed))
        os.sched_setaffinity(0, chosen)
        pinned = sorted(os.sched_getaffinity(0))
    torch.set_num_threads(threads)
    return {"threads": torch.get_num_threads(), "cpus": pinned}


def minor_faults():
    """This process's minor page faults so far (memory first touched, mapped by the kernel); None
    where the OS does not count them."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt if resource else None


def require_cuda():
    """Fail early, naming the job field, where this torch cannot run on a GPU."""
    if torch.cuda.is_available():
        return
    if torch.version.cuda is None:
        what = "a CPU-only build (torch.version.cuda is None)"
    else:
        what = "built for CUDA %s but finds no usable GPU (torch.cuda.is_available() is False)" % torch.version.cuda
    raise ExecutionError("job field 'device' is 'cuda', but this torch %s is %s: run the cell with device "
                         "'cpu' or on a target with a CUDA build of torch and a GPU" % (torch.__version__, what))


def synchronised(clock):
    """``clock``, read after ``torch.cuda.synchronize()``: the GPU work queued before a stamp is
    done by then, so each region between two stamps contains its own GPU work."""
    def read():
        torch.cuda.synchronize()
        return clock()

    return read


class TrainingState:
    """A copy of the model's and optimizer's state, to undo calibration steps."""

    def __init__(self, model, optimizer):
        self.model, self.optimizer = model, optimizer
        self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
        self.optimizer_state = copy.deepcopy(optimizer.state_dict())
        self.rng = torch.get_rng_state()

    def restore(self):
        self.model.load_state_dict(self.weights)
        self.optimizer.load_state_dict(self.optimizer_state)
        torch.set_rng_state(self.rng)


class Execution:
    def __init__(self, plan, artifacts_dir, clock):
        self.plan = plan
        self.device = plan.get("device", "cpu")  # plans from before the field ran on the CPU
        if self.device == "cuda":
            require_cuda()
            clock = synchronised(clock)
        self.clock = clock
        self.placement = place(plan["threads"], plan.get("cpus"))
        # the odt ops' C kernels are built (once per machine) and loaded here, outside any step
        self.ops_backend = native.backend() if plan["ops"] == "odt" else "torch (stock layers)"
        state = _artifact(artifacts_dir, plan["checkpoint"]) if plan.get("checkpoint") else None
        data = plan["data"]
        self.arrays = _artifact(artifacts_dir, data["artifact"]) if data.get("artifact") else None
        self.model = build_model(plan, state, self.arrays, self.device)
        self.batches = self._fresh_batches()
        self.selection = None
        # a plan chosen on the device (TinyTrain) is applied after its timed selection, in run()
        self.trainer = None if plan.get("selection") else self._trainer(
            self.model, apply_update(self.model, plan, plan["update_plan"]))
        self.twin = None
        if plan["mode"] == "paired":  # the exact twin, built the same way from the same seed
            twin_plan = dict(plan, update_plan=plan["twin"]["update_plan"], ops=plan["twin"]["ops"])
            self.twin = self._trainer(*prepare_model(twin_plan, state, self.arrays, self.device))

    def _trainer(self, model, params):
        schedule = self.plan["schedule"]
        return Trainer(model, params, schedule["lr"], schedule["momentum"], clock=self.clock,
                       schedule=schedule.get("lr_schedule", "constant"), steps=schedule["steps"])

    def _fresh_batches(self):
        return make_batches(self.plan["data"], self.plan["schedule"]["batch"], self.plan["seeds"]["data"],
                            self.arrays)

    def _next_batch(self):
        """The next training batch on the model's device (made on the CPU, copied untimed)."""
        x, y = self.batches.next()
        return x.to(self.device, non_blocking=False), y.to(self.device, non_blocking=False)

    def select_plan(self, emit):
        """The device-side selection on the support set (an episode's, else one training batch),
        timed ``SELECTION_REPEATS`` times after one untimed run, interleaved with a full forward
        and backward of every parameter on the same set (the reference its cost is held to);
        then the chosen plan is applied."""
        data = self.plan["data"]
        x, y = self.batches.support_set() if data["kind"] == "episode" else self._fresh_batches().next()
        x, y = x.to(self.device), y.to(self.device)
        context = PlanContext(self.plan["model"]["name"], layer_table(self.model), self.model, data["resolution"])
        params, seed = self.plan["selection"]["params"], self.plan["seeds"]["init"]
        clock, times, reference = self.clock, [], []
        self._region(emit, "start", "selection")
        for i in range(SELECTION_REPEATS + 1):
            t0 = clock()
            record = select(context, x, y, params, seed)
            t1 = clock()
            full_forward_backward(self.model, x, y)
            t2 = clock()
            if i:
                times.append(t1 - t0)
                reference.append(t2 - t1)
        self._region(emit, "stop", "selection")
        record.update(support=len(y), selection_ns=times, reference_ns=reference)
        self.trainer = self._trainer(self.model, apply_update(self.model, self.plan, record["update_plan"]))
        return record

    def _region(self, emit, event, name):
        emit({"type": "region", "event": event, "name": name, "t": self.clock()})

    def _step(self, emit, phase, i, buffer, x, y, stamps=None):
        """One instrumented step on ``(x, y)`` (or the ``stamps`` of one just taken), its message
        sent (or buffered); its duration."""
        msg = {"type": "step", "i": i, "phase": phase, "t": list(stamps or self.trainer.step(x, y))}
        if buffer is None:
            emit(msg)
        else:
            buffer.append(msg)
        return msg["t"][3] - msg["t"][0]

    def _steps(self, emit, count, buffer):
        for i in range(count):
            x, y = self._next_batch()
            self._step(emit, "timed", i, buffer, x, y)

    def _overhead_pairs(self, emit, pairs):
        """Interleaved pairs (ABBA) of an instrumented step and a bare step on the same kind of
        batch. The bare step is timed from outside; of the instrumented one, both the step time it
        reports (its last stamp minus its first) and its time from outside, sending its message
        included. On CUDA the clock synchronises, so the bare step's GPU work, too, ends inside
        its time from outside."""
        clock = self.clock
        out = {"reported_ns": [], "instrumented_ns": [], "bare_ns": [], "order": "ABBA"}
        for i in range(pairs):
            for arm in (("instrumented", "bare") if i % 2 == 0 else ("bare", "instrumented")):
                x, y = self._next_batch()
                t0 = clock()
                if arm == "bare":
                    self.trainer.bare_step(x, y)
                else:
                    out["reported_ns"].append(self._step(emit, "timed", i, None, x, y))
                out[arm + "_ns"].append(clock() - t0)
        return out

    def _exact_pairs(self, emit, pairs, warmup):
        """Interleaved pairs (ABBA) of a step of the plan (sent as the timed steps) and a step of
        its exact twin on the same batch, both timed by the trainer's stamps; the twin first warms
        up as many steps as the plan's calibration did. Each arm's minor page faults per step
        (``minor_faults``, read just outside the step's stamps; None where the OS does not count
        them) show which arm's memory came fresh from the kernel."""
        for _ in range(warmup):
            self.twin.step(*self._next_batch())
        exact = {part: [] for part in ("forward_ns", "backward_ns", "update_ns", "step_ns")}
        faults = {"plan": [], "exact": []}
        for i in range(pairs):
            x, y = self._next_batch()
            for arm in (("plan", "twin") if i % 2 == 0 else ("twin", "plan")):
                before = minor_faults()
                t = (self.trainer if arm == "plan" else self.twin).step(x, y)
                after = minor_faults()
                if before is not None:
                    faults["plan" if arm == "plan" else "exact"].append(after - before)
                if arm == "plan":
                    self._step(emit, "timed", i, None, x, y, stamps=t)
                    continue
                for part, (a, b) in zip(exact, ((0, 1), (1, 2), (2, 3), (0, 3))):
                    exact[part].append(t[b] - t[a])
        return {"order": "ABBA", "exact": exact, "minor_faults": faults if faults["plan"] else None}

    def _calibrate(self, emit):
        """Warm-up and sample sizing, then the model, optimizer and data stream as before it:
        calibration never trains, so accuracy depends only on the plan's steps."""
        schedule = self.plan["schedule"]
        saved = TrainingState(self.model, self.trainer.optimizer)

        def step(i):
            x, y = self._next_batch()
            return self._step(emit, "warmup", i, None, x, y)

        self._region(emit, "start", "warmup")
        decisions = calibrate.decide(step, schedule["warmup"], schedule["steps"],
                                     extendable=not self.batches.has_labels
                                     and self.plan["mode"] not in ("overhead", "paired"),
                                     clock=self.clock)
        self._region(emit, "stop", "warmup")
        saved.restore()
        self.batches = self._fresh_batches()
        self.trainer.step_count, self.trainer.steps = 0, decisions["timed_steps"]  # the schedule restarts
        return decisions

    def _accuracy(self, emit, name):
        if not self.batches.has_labels:
            return None
        self._region(emit, "start", name)
        device = self.device
        value = accuracy(self.model, ((x.to(device), y.to(device)) for x, y in self.batches.evaluation()))
        self._region(emit, "stop", name)
        return value

    def run(self, emit):
        mode = self.plan["mode"]
        checks = syschecks.run_checks()
        if self.trainer is None:
            self.selection = self.select_plan(emit)
        before = self._accuracy(emit, "eval-before")
        decisions = self._calibrate(emit)
        # energy mode marks one long window with no I/O inside it; steps are sent after it closes
        buffer = [] if mode == "energy" else None
        overhead = paired = None
        with device_info.PeakWindow(cuda=self.device == "cuda") as peak:
            self._region(emit, "start", "timed")
            if mode == "overhead":
                overhead = self._overhead_pairs(emit, decisions["timed_steps"])
            elif mode == "paired":
                paired = self._exact_pairs(emit, decisions["timed_steps"], decisions["warmup_steps"])
            else:
                self._steps(emit, decisions["timed_steps"], buffer)
            self._region(emit, "stop", "timed")
        for msg in buffer or ():
            emit(msg)
        after = self._accuracy(emit, "eval-after")
        return {
            "type": "result",
            "memory": peak.record(),
            "accuracy": {"before": before, "after": after,
                         "split": "episode's query set" if self.plan["data"]["kind"] == "episode" else "held-out split"},
            "calibration": decisions,
            "placement": self.placement,
            "ops_backend": self.ops_backend,
            "system_checks": checks,
            "overhead": overhead,
            "paired": paired,
            "selection": self.selection,
        }
