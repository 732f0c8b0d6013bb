"""The Job: one cell of a plan, frozen and validated; its cell id hashes what is measured.

Execution settings (target, threads, cpus, warm-up, timeout) are recorded but not hashed, so the same
cell measured on two targets shares one id and reports can pivot on it.
"""
import hashlib
import json
from dataclasses import asdict, dataclass, field
from typing import Mapping, Optional

MODES = ("performance", "energy", "overhead", "paired")
"""performance: timed steps; energy: one long window, no I/O inside; overhead: interleaved pairs of
an instrumented and a bare step (``steps`` pairs), to measure what the harness's timing costs;
paired: interleaved pairs of a step of the cell's gradient-filtered plan and a step of its exact
twin (``steps`` pairs), so that speedups come from steps run back to back."""
OPS = ("stock", "odt")
"""As ``suites.methods.apply.OPS`` (kept here so that reading journals needs no torch; a test checks)."""
LR_SCHEDULES = ("constant", "cosine")
"""As ``suites.train.LR_SCHEDULES``: constant, or warm-up then cosine decay over the timed steps."""
NUMERICS = ("fp32", "int8", "int8-noqas")
"""fp32; int8: the real-quantized int8 graph (``suites.quant``) trained with QAS; int8-noqas: the
same without QAS (the paper's ablation)."""
DEVICES = ("cpu", "cuda")
"""Where the model and batches live; ``threads`` and ``cpus`` stay host threads and CPUs."""
MEASURED_FIELDS = ("model", "method", "method_params", "data", "checkpoint", "resolution", "batch",
                   "steps", "seed", "lr", "ops", "mode")
LATER_MEASURED_FIELDS = {"numeric": "fp32", "lr_schedule": "constant", "device": "cpu", "episode": ""}
"""Measured fields added later, hashed only when not at their default, so older cell ids stay."""


class JobError(ValueError):
    """A job field is invalid; the message names the field and what to do."""


@dataclass(frozen=True)
class Job:
    model: str
    method: str
    data: str = "synthetic"
    resolution: int = 128
    batch: int = 1
    steps: int = 20
    warmup: int = 5
    seed: int = 0
    lr: float = 0.01
    lr_schedule: str = "constant"
    threads: int = 1
    cpus: str = "auto"
    ops: str = "stock"
    numeric: str = "fp32"
    device: str = "cpu"
    episode: str = ""  # few-shot data: the episode protocol, e.g. "5way-5shot" or "vvvs"
    mode: str = "performance"
    timeout_s: float = 600.0
    checkpoint: Optional[str] = None
    method_params: Mapping = field(default_factory=dict)

    def __post_init__(self):
        for name in ("resolution", "batch", "steps", "threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise JobError("job field %r must be a positive integer, got %r" % (name, value))
        for name in ("warmup", "seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise JobError("job field %r must be a non-negative integer, got %r" % (name, value))
        if not isinstance(self.lr, (int, float)) or isinstance(self.lr, bool) or self.lr <= 0:
            raise JobError("job field 'lr' must be a positive number, got %r" % (self.lr,))
        object.__setattr__(self, "lr", float(self.lr))  # lr = 1 and lr = 1.0 are one cell
        if not isinstance(self.timeout_s, (int, float)) or self.timeout_s <= 0:
            raise JobError("job field 'timeout_s' must be positive seconds, got %r" % (self.timeout_s,))
        cpus = parse_cpus(self.cpus)
        if cpus is not None and self.threads > len(cpus):
            raise JobError("job fields 'threads' = %d and 'cpus' = %r: each thread needs a CPU of its "
                           "own; list at least %d CPUs or lower 'threads'" % (self.threads, self.cpus, self.threads))
        if self.ops not in OPS:
            raise JobError("job field 'ops' is %r; known: %s" % (self.ops, ", ".join(OPS)))
        if self.lr_schedule not in LR_SCHEDULES:
            raise JobError("job field 'lr_schedule' is %r; known: %s" % (self.lr_schedule, ", ".join(LR_SCHEDULES)))
        if self.numeric not in NUMERICS:
            raise JobError("job field 'numeric' is %r; known: %s" % (self.numeric, ", ".join(NUMERICS)))
        if self.numeric != "fp32" and self.ops != "stock":
            raise JobError("job field 'numeric' = %r needs ops 'stock': the op library is fp32 only" % self.numeric)
        if self.device not in DEVICES:
            raise JobError("job field 'device' is %r; known: %s" % (self.device, ", ".join(DEVICES)))
        if not isinstance(self.episode, str):
            raise JobError("job field 'episode' must be a protocol text like \"5way-5shot\" or \"vvvs\", got %r"
                           % (self.episode,))
        if self.mode not in MODES:
            raise JobError("job field 'mode' is %r; known: %s" % (self.mode, ", ".join(MODES)))
        object.__setattr__(self, "method_params", dict(sorted(dict(self.method_params).items())))

    @property
    def cell_id(self) -> str:
        measured = {k: getattr(self, k) for k in MEASURED_FIELDS}
        measured.update({k: getattr(self, k) for k, default in LATER_MEASURED_FIELDS.items()
                         if getattr(self, k) != default})
        blob = json.dumps(measured, sort_keys=True, separators=(",", ":"))
        return "c" + hashlib.sha256(blob.encode()).hexdigest()[:12]

    @property
    def label(self) -> str:
        """Method with its parameters, and the ops, numeric format and device when not the defaults:
        ``bp-last-k(k=6)``, ``sparse-update(preset=99kb)+odt``, ``bias-only+int8``, ``full+cuda``."""
        label = self.method
        if self.method_params:
            label += "(%s)" % ",".join("%s=%s" % kv for kv in self.method_params.items())
        for value, default in ((self.ops, "stock"), (self.numeric, "fp32"), (self.device, "cpu")):
            if value != default:
                label += "+" + value
        return label

    @property
    def name(self) -> str:
        """Readable cell name, the same in logs, ``-k`` filters, pytest ids and exported benchmarks,
        e.g. ``mbv2-w0.35-bp-last-k(k=6)-synthetic-r128-b1`` (then ``-5way-5shot`` for an episode
        protocol, ``-energy`` etc. for other modes)."""
        name = "%s-%s-%s-r%d-b%d" % (self.model, self.label, self.data, self.resolution, self.batch)
        if self.episode:
            name += "-" + self.episode
        return name if self.mode == "performance" else "%s-%s" % (name, self.mode)

    def to_json(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, d: Mapping) -> "Job":
        return cls(**d)


def parse_cpus(text):
    """``"auto"`` -> None; ``"2-3"`` or ``"0,2"`` (taskset's list format) -> sorted CPU numbers."""
    if text == "auto":
        return None
    cpus = set()
    try:
        for part in str(text).split(","):
            lo, _, hi = part.partition("-")
            cpus.update(range(int(lo), int(hi or lo) + 1))
    except ValueError:
        cpus = set()
    if not cpus or min(cpus) < 0:
        raise JobError("job field 'cpus' must be \"auto\" or a CPU list like \"2-3\" or \"0,2\", "
                       "got %r" % (text,))
    return sorted(cpus)


NAME_DETAILS = (("lr", "lr%g"), ("seed", "s%d"), ("steps", "steps%d"), ("lr_schedule", "%s"), ("checkpoint", "%s"))
"""Fields a name leaves out, added (only those that differ) where cells would share a name (no
checkpoint reads ``pretrained``: the backbone pre-trained on the source classes)."""


def _detail(job, field):
    value = getattr(job, field)
    return "pretrained" if value is None and field == "checkpoint" else value


def unique_names(jobs):
    """``{cell_id: name}``: each job's ``name``; where names collide, the fields that tell the
    cells apart are added (``-lr0.1-s2``), and the cell id where those do not suffice."""
    groups = {}
    for job in jobs:
        groups.setdefault(job.name, {})[job.cell_id] = job
    names = {}
    for name, same in groups.items():
        if len(same) == 1:
            names.update(dict.fromkeys(same, name))
            continue
        varying = [(f, fmt) for f, fmt in NAME_DETAILS if len({getattr(j, f) for j in same.values()}) > 1]
        detailed = {cell: "-".join([name] + [fmt % _detail(j, f) for f, fmt in varying])
                    for cell, j in same.items()}
        counts = {}
        for text in detailed.values():
            counts[text] = counts.get(text, 0) + 1
        names.update({cell: text if counts[text] == 1 else "%s-%s" % (text, cell) for cell, text in detailed.items()})
    return names
