"""``analyze(plan)``: every host-derived count for an ExecutionPlan, as Figures.

Runs on the host in untimed passes over a synthetic batch of the plan's shape (values do not
change what is saved or counted). The model is prepared exactly as the device prepares it.
"""
import torch

from ..executor import prepare_model
from ..units import Figure, Source, missing
from .allocator import HOW as ALLOCATOR
from .allocator import allocator_saved_bytes
from suites.counts import analytic_counts
from .flops import count_flops
from .saved import measure_saved

HOOKS = "saved-tensor hooks, storages counted once; untimed host pass"
FLOP_COUNTER = "torch.utils.flop_counter on the executed graph; untimed host pass"


def _batch(plan):
    r, b = plan["data"]["resolution"], plan["schedule"]["batch"]
    gen = torch.Generator().manual_seed(0)
    return torch.randn(b, 3, r, r, generator=gen), torch.zeros(b, dtype=torch.long)


def _plan_fp32(value):
    if value is None:
        return missing("bytes", Source.ANALYTIC, "plan_fp32 counts plans with BN folded; this plan trains "
                       "BatchNorm in train mode", per="sample")
    return Figure(value, "bytes", Source.ANALYTIC, per="sample")


def prepared_model(plan):
    return prepare_model(plan)[0]


def analyze(plan):
    """Nested dict of Figures: params, counts, ``analytic_backward`` and ``memory_bytes`` by
    convention, measured saved bytes (by hooks and, independently, at the allocator) and counted
    FLOPs. All per batch of the plan's batch size."""
    x, y = _batch(plan)
    counts = analytic_counts(plan, x)
    saved = measure_saved(prepared_model(plan), x, y)
    flops = count_flops(prepared_model(plan), x, y)
    held = allocator_saved_bytes(prepared_model(plan), x)
    analytic = Source.ANALYTIC
    # an int8 plan runs as the fp32 emulation of its int8 graph: what is observed is the emulation's
    observed, note = ((Source.MEASURED, "") if plan.get("numeric", "fp32") == "fp32"
                      else (Source.EMULATED, " (fp32 emulation of the int8 graph)"))
    return {
        "params": Figure(counts["params"], "count", analytic, per="model"),
        "trainable_params": Figure(counts["trainable_params"], "count", analytic, per="model"),
        "forward_macs": Figure(counts["forward_macs"], "MAC", analytic),
        "analytic_backward": {
            "exact_backward_macs": Figure(counts["exact_backward_macs"], "MAC", analytic),
            "tinytrain_macs": Figure(counts["tinytrain_macs"], "MAC", analytic),
            "gradfilter_flops": Figure(counts["gradfilter_flops"], "FLOP", analytic)},
        "memory_bytes": {
            "saved_inputs_fp32": Figure(counts["saved_inputs_fp32"], "bytes", analytic, per="sample"),
            "plan_fp32": _plan_fp32(counts["plan_fp32"]),
            "sparseupdate_int8": Figure(counts["sparseupdate_int8"], "bytes", analytic, per="sample")},
        "measured_saved_bytes": Figure(saved["saved_bytes"], "bytes", observed, how=HOOKS + note),
        "measured_saved_with_params_bytes": Figure(saved["with_params_bytes"], "bytes", observed,
                                                   how=HOOKS + note),
        "allocator_saved_bytes": Figure(held, "bytes", observed, how=ALLOCATOR + note),
        "counted_forward_flops": Figure(flops["forward"], "FLOP", observed, how=FLOP_COUNTER + note),
        "counted_backward_flops": Figure(flops["backward"], "FLOP", observed, how=FLOP_COUNTER + note),
    }
