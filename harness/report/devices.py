"""The report's devices section: what each run of a target described itself as, and its speed probe.

A run's device description is taken once, before its first cell, and repeated in each of its
records; ``harness.results`` keeps one row per (target, run). Records without one (older journals,
test doubles) give no row; fields a device could not read are "—".
"""
from __future__ import annotations

import pandas as pd

from .tables import DASH, escape, markdown_table, sig3

HEADERS = ["target", "run", "CPU", "OS", "Python", "torch (threads)", "governor", "GPU", "allocator env",
           "cores", "memory (GiB)", "copy (GB/s, measured)", "GEMM (GFLOP/s, measured)",
           "torch call (µs, measured)", "probe threads"]
TEXT_COLUMNS = HEADERS.index("cores")
INTRO = ("What each run's device reported before its first cell. The last four columns are its speed "
         "probe (`harness/probe.py`), taken once per run at torch's thread count then: a copy of one fp32 "
         "buffer into another, counted as bytes read plus bytes written; a square fp32 matrix product, "
         "2·n³ FLOP; one in-place add on a one-element tensor, the fixed cost of a torch call from Python. "
         "Timing ratios of the same cells move between machines of one kind (VM instances, boards with "
         "other firmware or cooling); compare runs whose probes differ with that in mind. \"allocator "
         "env\" lists the `MALLOC_*` variables the device ran with (\"default\": none).")


def _text(value: object, fmt=str) -> str:
    return DASH if value is None or value != value else fmt(value)


def _allocator(env: object) -> str:
    if env is None:
        return DASH
    return ", ".join(f"{key}={value}" for key, value in sorted(env.items())) or "default"


def _row(row: tuple) -> list[str]:
    return [_text(row.target), _text(row.run_id), _text(row.cpu_model) + f" ({_text(row.board)})",
            _text(row.os), _text(row.python), f"{_text(row.torch)} ({_text(row.torch_threads)})",
            _text(row.governor), _text(row.gpu), _allocator(row.malloc_env), _text(row.cpu_count),
            _text(row.memory_capacity_bytes, lambda b: f"{b / 2**30:.1f}"),
            _text(row.probe_copy_bytes_per_s, lambda r: sig3(r / 1e9)),
            _text(row.probe_gemm_flop_per_s, lambda r: sig3(r / 1e9)),
            _text(row.probe_op_dispatch_ns, lambda ns: sig3(ns / 1e3)), _text(row.probe_threads)]


def devices_section(devices: pd.DataFrame) -> str:
    """One row per run of each target, sorted by target and run id; ``""`` when no record has one."""
    if devices.empty:
        return ""
    ordered = devices.sort_values(["target", "run_id"], key=lambda column: column.map(str), kind="stable")
    rows = [_row(row) for row in ordered.itertuples(index=False)]
    columns = [(header, [escape(row[i]) for row in rows]) for i, header in enumerate(HEADERS)]
    hows = sorted(set(devices["probe_how"].dropna()))
    probes = "\n".join(escape(f"- probe: {how}") for how in hows)
    parts = ["## Devices", INTRO, markdown_table(columns, left_aligned=TEXT_COLUMNS), probes]
    return "\n\n".join(part for part in parts if part)
