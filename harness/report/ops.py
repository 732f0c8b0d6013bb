"""The report section that sets the op library (``ops = "odt"``) against stock ops: for every cell
that ran both ways in the same group, the time and saved-bytes ratios odt / stock."""
from __future__ import annotations

from ..stats import DEFAULT_CONFIDENCE
from .tables import MISSING, escape, kib, markdown_table, ratio_cell

ODT = "+odt"


def _rows(group) -> list[list[str]]:
    rows = []
    for label in group.labels:
        if not label.endswith(ODT) or label[:-len(ODT)] not in group.values:
            continue
        odt, stock = group.values[label], group.values[label[:-len(ODT)]]
        saved = [odt.get("measured_saved_bytes", MISSING), stock.get("measured_saved_bytes", MISSING)]
        rows.append([group.title, label[:-len(ODT)]]
                    + [ratio_cell(odt.get(q, MISSING), stock.get(q, MISSING), sampled=True)
                       for q in ("forward_ns", "backward_ns", "step_ns")]
                    + [" / ".join(kib(v) if v.present else "—" for v in saved),
                       ratio_cell(saved[0], saved[1], sampled=False)])
    return rows


def ops_section(groups) -> str:
    """``""`` when no cell ran with both op sets."""
    rows = [row for group in groups for row in _rows(group)]
    if not rows:
        return ""
    ci = f"[{DEFAULT_CONFIDENCE:.0%} CI]"
    headers = ["group", "method", f"forward odt/stock {ci}", f"backward odt/stock {ci}", f"step odt/stock {ci}",
               "saved KiB odt / stock", "saved odt/stock (exact)"]
    columns = [(header, [escape(row[i]) for row in rows]) for i, header in enumerate(headers)]
    intro = ("The same plan with this harness's op library (`+odt`: frozen convs keep no input, channel "
             "updates keep only their channels, ReLU6 keeps 1 bit per element) and with stock PyTorch "
             "layers (which keep what they always keep; channel updates zero the other channels' "
             "gradients after a dense backward). Time ratios are ratios of medians with bootstrap CIs over "
             "the two cells' timed steps (run one after the other); saved bytes are measured, one pass each.")
    return "\n\n".join(["## Op library against stock ops", intro, markdown_table(columns, left_aligned=2)])
