"""Tests for harness.report: the Markdown report and its PNG figures from a hand-built long table."""
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from harness.report import render
from harness.report import figures
from harness.report.tables import Value, sig3

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MS = 1_000_000  # ns per ms
GROUP = dict(target="local", model="mbv2-w0.35", resolution=128, batch=1)


def _row(record, quantity, value, unit, source="measured", per="batch", reason=None, n=math.nan,
         q1=math.nan, q3=math.nan):
    return dict(record, quantity=quantity, value=value, unit=unit, source=source, per=per, reason=reason,
                n=n, q1=q1, q3=q3)


def ok_rows(label, *, forward=5.0, backward=40.0, update=2.0, saved=204800.0, bwd_flops=8e6,
            accuracy=0.9, data="synthetic", model=GROUP["model"], run_id="run-1", sources=None,
            accuracy_reason="synthetic data has no labels to score"):
    """The rows of one ok record; times in ms (IQR = median ± 5 %), ``sources`` overrides per quantity."""
    sources = sources or {}
    method = label.split("(")[0]
    record = dict(GROUP, model=model, data=data, run_id=run_id, cell_id=f"{model}-{label}-{data}",
                  method=method, label=label, status="ok")
    rows = [
        _row(record, q, ms * MS, "ns", sources.get(q, "measured"), n=20,
             q1=0.95 * ms * MS, q3=1.05 * ms * MS)
        for q, ms in (("forward_ns", forward), ("backward_ns", backward), ("update_ns", update),
                      ("step_ns", forward + backward + update))
    ]
    rows += [
        _row(record, "measured_saved_bytes", saved, "bytes",
             sources.get("measured_saved_bytes", "measured")),
        _row(record, "counted_backward_flops", bwd_flops, "FLOP",
             sources.get("counted_backward_flops", "measured")),
        _row(record, "accuracy_after", accuracy, "fraction", sources.get("accuracy_after", "measured"),
             per="run", reason=None if not math.isnan(accuracy) else accuracy_reason),
        _row(record, "energy_j", math.nan, "J", per="run", reason="no power meter attached"),
        _row(record, "forward_macs", 1e7, "MAC", "analytic", per="model"),
    ]
    return rows


def failed_rows(label, message, run_id="run-1"):
    """The single error row of one failed record."""
    record = dict(GROUP, data="synthetic", run_id=run_id, cell_id=f"cell-{label}",
                  method=label.split("(")[0], label=label, status="failed")
    return [_row(record, "error", math.nan, "count", per="run", reason=message)]


def table(*records):
    return pd.DataFrame([row for rows in records for row in rows])


def sample_table():
    return table(
        ok_rows("last-layer", backward=4.0, saved=1024.0, bwd_flops=1e5, accuracy=0.72,
                data="mnist5k-transfer"),
        ok_rows("full", backward=40.0, accuracy=0.95, data="mnist5k-transfer"),
        ok_rows("bp-last-k(k=6)", backward=10.0, saved=51200.0, bwd_flops=2e6, accuracy=0.91,
                data="mnist5k-transfer"),
        ok_rows("full", data="synthetic", accuracy=math.nan),
        ok_rows("bias-only", data="synthetic", backward=30.0, accuracy=math.nan),
        failed_rows("bp-last-k(k=12)", "RuntimeError: out of memory | allocator gave up"),
    )


def section(report: str, heading: str) -> str:
    """The text of the section whose heading starts with ``heading``, up to the next level-2 heading."""
    start = report.index("## " + heading)
    end = report.find("\n## ", start + 1)
    return report[start:] if end < 0 else report[start:end]


def parse_table(text: str) -> list[dict[str, str]]:
    """The first Markdown table in ``text`` as a list of {header: cell} dicts."""
    lines = [line for line in text.splitlines() if line.startswith("|")]
    split = [[cell.strip() for cell in re.split(r"(?<!\\)\|", line)[1:-1]] for line in lines]
    headers, body = split[0], split[2:]
    return [dict(zip(headers, cells)) for cells in body]


def cell(row: dict[str, str], prefix: str) -> str:
    """The cell whose header starts with ``prefix`` (exactly one must)."""
    matches = [key for key in row if key.startswith(prefix)]
    assert len(matches) == 1, (prefix, list(row))
    return row[matches[0]]


@pytest.fixture
def report(tmp_path):
    return render(sample_table(), tmp_path / "out", ["journal-a.jsonl", "journal-b.jsonl"]).read_text()


def test_render_writes_report_and_every_referenced_png(tmp_path):
    path = render(sample_table(), tmp_path / "new" / "dir", ["journal-a.jsonl"])
    assert path == tmp_path / "new" / "dir" / "report.md"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", path.read_text())
    assert "latency_local_mbv2-w0.35_synthetic_r128_b1.png" in links
    assert "accuracy_local_mnist5k-transfer_r128_b1.png" in links
    assert len(links) == 3  # two latency figures (one per group) and one accuracy figure
    for link in links:
        assert (path.parent / link).read_bytes().startswith(PNG_SIGNATURE)
    # atomic writes leave no temporary files behind
    assert sorted(p.name for p in path.parent.iterdir()) == sorted(links + ["report.md"])


def test_rendering_twice_gives_identical_bytes(tmp_path):
    """Two processes with different hash seeds, so set or dict ordering cannot leak into the output."""
    for out, seed in (("a", "1"), ("b", "2")):
        code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import test_report; "
                "test_report.render(test_report.sample_table(), Path(sys.argv[2]), ['j.jsonl'])")
        subprocess.run([sys.executable, "-c", code, str(Path(__file__).parent), str(tmp_path / out)],
                       cwd=ROOT, check=True, env={**os.environ, "PYTHONHASHSEED": seed})
    names = sorted(p.name for p in (tmp_path / "a").iterdir())
    assert names == sorted(p.name for p in (tmp_path / "b").iterdir())
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_sources_and_how_to_read_are_listed(report):
    assert "Sources: `journal-a.jsonl`, `journal-b.jsonl`." in report
    assert "## How to read this report" in report


def test_full_row_first_ratios_and_iqr(report):
    rows = parse_table(section(report, "local · mbv2-w0.35 · mnist5k-transfer"))
    assert [r["label"] for r in rows] == ["full", "bp-last-k(k=6)", "last-layer"]
    full, bp = rows[0], rows[1]
    assert cell(bp, "backward (ms") == "10.0 [9.50–10.5]"
    assert cell(bp, "backward ×full") == "×0.25"
    assert cell(bp, "step ×full") == "×0.36"  # (5 + 10 + 2) / (5 + 40 + 2)
    assert cell(bp, "saved (KiB") == "50.0"
    assert cell(bp, "saved ×full") == "×0.25"
    assert cell(bp, "bwd FLOP (MFLOP") == "2.00"
    assert cell(bp, "bwd FLOP ×full") == "×0.25"
    assert cell(full, "backward ×full") == "×1.00"
    assert cell(full, "n") == "20"
    assert cell(full, "acc. after") == "95.0"
    assert cell(rows[2], "saved ×full") == "×0.0050"  # below 0.1: two significant digits
    assert "saved (KiB, measured)" in rows[0]


def test_ratio_is_dash_without_full_row(tmp_path):
    text = render(table(ok_rows("bias-only"), ok_rows("last-layer")), tmp_path, []).read_text()
    rows = parse_table(section(text, "local"))
    assert [r["label"] for r in rows] == ["bias-only", "last-layer"]
    assert all(cell(r, "step ×full") == "—" for r in rows)


def test_failed_record_is_listed_with_its_message(report):
    failed = section(report, "Failed cells")
    rows = parse_table(failed)
    assert len(rows) == 1
    assert rows[0]["cell_id"] == "cell-bp-last-k(k=12)"
    assert rows[0]["label"] == "bp-last-k(k=12)"
    assert rows[0]["error"] == r"RuntimeError: out of memory \| allocator gave up"
    assert "bp-last-k(k=12)" not in section(report, "local · mbv2-w0.35 · synthetic")


def test_no_failed_section_without_failures(tmp_path):
    assert "Failed cells" not in render(table(ok_rows("full")), tmp_path, []).read_text()


def test_missing_accuracy_shows_dash_and_reason(report):
    synthetic = section(report, "local · mbv2-w0.35 · synthetic")
    rows = parse_table(synthetic)
    assert [cell(r, "acc. after") for r in rows] == ["—", "—"]
    reasons = [line[2:] for line in synthetic.splitlines() if line.startswith("- ")]
    assert reasons == ["accuracy_after: synthetic data has no labels to score",
                       "energy_j: no power meter attached"]


def test_emulated_value_is_labelled(tmp_path):
    records = table(ok_rows("full"), ok_rows("bias-only", sources={"backward_ns": "emulated"}))
    rows = parse_table(section(render(records, tmp_path, []).read_text(), "local"))
    assert cell(rows[0], "backward (ms, measured)") == "40.0 [38.0–42.0]"
    assert cell(rows[1], "backward (ms, measured)") == "40.0 [38.0–42.0] (emulated)"
    assert cell(rows[1], "backward ×full") == "×1.00 (emulated)"
    assert "(emulated)" not in cell(rows[1], "forward (ms")


def test_all_emulated_column_names_its_tag_in_header_and_cells(tmp_path):
    saved = {"measured_saved_bytes": "modelled"}
    records = table(ok_rows("full", sources=saved), ok_rows("bias-only", sources=saved))
    rows = parse_table(section(render(records, tmp_path, []).read_text(), "local"))
    assert [cell(r, "saved (KiB, modelled)") for r in rows] == ["200.0 (modelled)", "200.0 (modelled)"]


def test_accuracy_figure_says_emulated():
    points = [figures.AccuracyPoint("m", "full", Value(2048.0, "measured"), Value(0.9, "measured")),
              figures.AccuracyPoint("m", "bias-only", Value(1024.0, "emulated"), Value(0.8, "measured"))]
    fig = figures.accuracy_figure("title", points)
    ax = fig.axes[0]
    texts = [t.get_text() for t in ax.texts] + [t.get_text() for t in ax.get_legend().texts]
    assert "bias-only (emulated)" in texts
    assert "full" in texts
    assert "m (emulated)" in texts
    assert ax.get_xscale() == "log"
    figures.png_bytes(fig)


def test_sig3():
    cases = {12.345: "12.3", 9.996: "10.0", 1234.0: "1230", 0.012345: "0.0123", 0.0: "0"}
    assert {x: sig3(x) for x in cases} == cases


def test_import_does_not_load_torch():
    code = "import harness.report, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)
