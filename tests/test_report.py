"""Tests for harness.report: the Markdown report and its PNG figures from a hand-built long table."""
import itertools
import json
import math
import os
import re
import subprocess
import sys
import warnings
from pathlib import Path

import pandas as pd
import pytest
from matplotlib.collections import PathCollection

from harness.job import Job
from harness.journal import SCHEMA_VERSION
from harness.report import render
from harness.report import figures
from harness.report.tables import Value, format_ci, sig3
from harness.results import cell_tables, load, long_table
from harness.stats import paired_ratio_ci, ratio_ci, summary

ROOT = Path(__file__).resolve().parents[1]
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
MS = 1_000_000  # ns per ms
GROUP = dict(target="local", model="mbv2-w0.35", resolution=128, batch=1, mode="performance", lr=0.01, seed=0)


def _row(record, quantity, value, unit, source="measured", per="batch", reason=None, n=math.nan,
         q1=math.nan, q3=math.nan, samples=None):
    return dict(record, quantity=quantity, value=value, unit=unit, source=source, per=per, reason=reason,
                n=n, q1=q1, q3=q3, samples=samples)


def spread(ms, n=21):
    """``n`` integer-ns samples evenly spread over ``ms`` ± 10 %: median ``ms``, IQR ``ms`` ± 5 %."""
    return tuple(round(ms * MS * (0.9 + 0.2 * i / (n - 1))) for i in range(n))


def _timing_row(record, quantity, samples, source):
    s = summary(samples)
    return _row(record, quantity, s["median"], "ns", source, n=s["n"], q1=s["q1"], q3=s["q3"],
                samples=samples)


def ok_rows(label, *, forward=5.0, backward=40.0, update=2.0, saved=204800.0, bwd_flops=8e6,
            accuracy=0.9, data="synthetic", model=GROUP["model"], run_id="run-1", sources=None,
            accuracy_reason="synthetic data has no labels to score", warmup=5):
    """The rows of one ok record; times in ms (21 samples, IQR = median ± 5 %), ``sources`` overrides
    the source per quantity."""
    sources = sources or {}
    method = label.split("(")[0]
    name = f"{model}-{label}-{data}"
    record = dict(GROUP, model=model, data=data, run_id=run_id, cell_id=name, name=name, series=name,
                  warmup=warmup, method=method, label=label, status="ok")
    parts = {"forward_ns": spread(forward), "backward_ns": spread(backward), "update_ns": spread(update)}
    parts["step_ns"] = tuple(map(sum, zip(*parts.values())))
    rows = [_timing_row(record, q, samples, sources.get(q, "measured")) for q, samples in parts.items()]
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
    name = f"cell-{label}"
    record = dict(GROUP, data="synthetic", run_id=run_id, cell_id=name, name=name, series=name, warmup=None,
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


def _figure(value, unit="bytes"):
    return {"value": value, "unit": unit, "source": "measured", "per": "batch", "reason": None, "how": "test"}


def journal_record(method, *, backward=40.0, saved=204800, run_id="run-2", mode="performance", **extra):
    """One ok journal record of a ``method`` cell with 21 timed steps; ``extra`` joins its measurement
    (the keys that newer journals carry: overhead, calibration, placement, system_checks) and
    ``allocator_saved_bytes`` (given as ``allocator=``) its figures."""
    job = Job(model=GROUP["model"], method=method, steps=21, warmup=5, mode=mode)
    parts = {"forward_ns": spread(5.0), "backward_ns": spread(backward), "update_ns": spread(2.0)}
    parts["step_ns"] = tuple(map(sum, zip(*parts.values())))
    figures_ = {"measured_saved_bytes": _figure(saved)}
    if "allocator" in extra:
        figures_["allocator_saved_bytes"] = _figure(extra.pop("allocator"))
    measurement = dict({"samples": {k: list(v) for k, v in parts.items()}, "figures": figures_}, **extra)
    return {"schema": SCHEMA_VERSION, "target": GROUP["target"], "cell_id": job.cell_id, "run_id": run_id,
            "status": "ok", "job": job.to_json(), "measurement": measurement}


def calibration(warmup_steps, stop="stable", timed_reason="plan"):
    return {"warmup_min": 5, "warmup_max": 36, "warmup_steps": warmup_steps, "warmup_stop": stop,
            "window": 3, "tolerance": 0.05, "estimate_step_ns": 47_000_000, "timer_resolution_ns": 1,
            "timed_steps": 21, "timed_reason": timed_reason, "min_timed_ns": 10**9}


GOVERNOR = {"name": "cpu_governor", "status": "advice", "value": "powersave",
            "advice": "set the CPU governor to performance"}
CHECKS = [GOVERNOR, {"name": "thermal", "status": "unavailable", "value": None, "advice": None},
          {"name": "load", "status": "ok", "value": "0.1", "advice": None}]
BARE = spread(10.0)
JITTER = [50_000 * (i * 7 % 5 - 2) for i in range(len(BARE))]  # up to ±1 % of a 10 ms step
FAST = tuple(round(b * 1.01) + j for b, j in zip(BARE, JITTER))  # about 1 % overhead
SLOW = tuple(round(b * 1.10) + j for b, j in zip(BARE, JITTER))
SLOWER = tuple(round(b * 1.20) + j for b, j in zip(BARE, JITTER))


def pairs(reported, instrumented):
    return {"reported_ns": list(reported), "instrumented_ns": list(instrumented), "bare_ns": list(BARE),
            "order": "ABBA"}


def new_records():
    """Records with every key that newer journals carry."""
    return [
        journal_record("full", allocator=200_000, calibration=calibration(12), system_checks=CHECKS,
                       placement={"threads": 1, "cpus": [1]},
                       overhead=pairs(FAST, SLOW)),  # the step message costs 10 %, outside the step
        journal_record("bias-only", backward=30.0, saved=8192, allocator=2048,
                       calibration=calibration(36, "max-steps", "min-time"),
                       system_checks=CHECKS[:2], placement={"threads": 2, "cpus": [0, 1]},
                       overhead=pairs(SLOW, SLOWER)),
        journal_record("last-layer", backward=4.0, system_checks=[dict(GOVERNOR, value="ondemand")],
                       placement={"threads": 1, "cpus": None}),  # no calibration; no affinity on its OS
    ]


def render_journal(records, out: Path) -> str:
    """Write ``records`` as a journal beside ``out``, load it back and render it; the report text."""
    path = out.parent / f"{out.name}-journal" / "journal.jsonl"
    path.parent.mkdir(parents=True)
    path.write_text("".join(json.dumps(record) + "\n" for record in records))
    loaded, problems = load([path])
    assert not problems
    return render(long_table(loaded), out, [path.name], cell_tables(loaded)).read_text()


def render_sample_table(out: Path) -> None:
    render(sample_table(), out, ["j.jsonl"])


def render_new_journal(out: Path) -> None:
    render_journal(new_records(), out)


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


@pytest.mark.parametrize("how", ["render_sample_table", "render_new_journal"])
def test_rendering_twice_gives_identical_bytes(tmp_path, how):
    """Two processes with different hash seeds, so set or dict ordering cannot leak into the output."""
    for out, seed in (("a", "1"), ("b", "2")):
        code = ("import sys; from pathlib import Path; sys.path.insert(0, sys.argv[1]); import test_report; "
                f"test_report.{how}(Path(sys.argv[2]))")
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
    assert cell(bp, "saved (KiB") == "50.0"
    assert cell(bp, "saved ×full (exact)") == "×0.25"
    assert cell(bp, "bwd FLOP (MFLOP") == "2.00"
    assert cell(bp, "bwd FLOP ×full (exact)") == "×0.25"
    assert cell(full, "backward ×full") == "×1.00"  # the reference itself: 1 by definition, no interval
    assert (cell(full, "n"), cell(full, "warm-up")) == ("21", "5")
    assert cell(full, "acc. after") == "95.0"
    assert cell(rows[2], "saved ×full") == "×0.0050"  # below 0.1: two significant digits
    assert "saved (KiB, measured)" in rows[0]


def test_time_ratios_carry_the_bootstrap_ci_of_the_two_cells_samples(report):
    rows = parse_table(section(report, "local · mbv2-w0.35 · mnist5k-transfer"))
    bp, last = rows[1], rows[2]
    backward = ratio_ci(spread(10.0), spread(40.0))
    assert cell(bp, "backward ×full [95% CI]") == format_ci(backward)
    assert format_ci(backward).startswith("×0.25 [") and backward.low < 0.25 < backward.high
    step = ratio_ci(tuple(map(sum, zip(spread(5.0), spread(10.0), spread(2.0)))),
                    tuple(map(sum, zip(spread(5.0), spread(40.0), spread(2.0)))))
    assert cell(bp, "step ×full [95% CI]") == format_ci(step)
    assert format_ci(step).startswith("×0.36 [")  # (5 + 10 + 2) / (5 + 40 + 2)
    assert cell(last, "backward ×full") == format_ci(ratio_ci(spread(4.0), spread(40.0)))


def test_format_ci():
    ci = ratio_ci([41, 42, 43, 44], [100, 101, 99, 100])
    assert format_ci(ci) == f"×0.42 [{ci.low:.2f}–{ci.high:.2f}]"
    small = ratio_ci([5, 6, 7], [100, 101, 99])
    assert re.fullmatch(r"×0\.060 \[0\.0\d\d–0\.0\d\d\]", format_ci(small)), format_ci(small)


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
    assert re.fullmatch(r"×1\.00 \[.*\] \(emulated\)", cell(rows[1], "backward ×full")), rows[1]
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


TINYTRAIN_LABEL = "tinytrain(compute=0.6*sparse-update:99kb,criterion=fisher,memory=sparse-update:99kb,ratio=0.5)+odt"


def test_a_long_label_is_wrapped_after_its_commas_and_loses_nothing():
    text = figures.wrapped(TINYTRAIN_LABEL)
    assert text.replace("\n", "") == TINYTRAIN_LABEL
    assert all(len(line) <= 40 for line in text.split("\n")[:-1])
    assert all(line.endswith((",", "(")) for line in text.split("\n")[:-1])
    assert figures.wrapped("full") == "full"


def test_figures_with_a_tinytrain_label_fit_their_canvas():
    """matplotlib warns when tight_layout cannot make room for the tick labels or legend, and the
    saved PNG then cuts them off at its edge (it did for TinyTrain's label before wrapping)."""
    labels = ["full", TINYTRAIN_LABEL]
    step = {"forward_ns": Value(2e6, "measured"), "backward_ns": Value(3e6, "measured"),
            "update_ns": Value(1e5, "measured")}
    points = [figures.AccuracyPoint("m", label, Value(1024.0, "measured"), Value(0.8, "measured"))
              for label in labels]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for fig in (figures.latency_figure("title", labels, {label: step for label in labels}),
                    figures.accuracy_figure("title", points)):
            fig.canvas.draw()
            box = fig.axes[0].get_tightbbox(fig.canvas.get_renderer())
            assert box.x0 >= 0 and box.y0 >= 0
            figures.png_bytes(fig)


def test_labels_of_points_close_together_do_not_overlap():
    """The quickstart's accuracy figure: two models' sparse-update points 1.2 points and 9% apart,
    whose labels (one above its point, one below) overlapped each other and a marker."""
    quickstart = {"mbv2-w0.35": {"full": (41000, 90.9), "last-layer": (7, 62.0), "bias-only": (27500, 71.9),
                                 "bp-last-k(k=6)": (700, 73.2), "sparse-update(preset=99kb)+odt": (240, 86.2)},
                  "mcunet-5fps": {"full": (36000, 93.7), "last-layer": (10, 63.4), "bias-only": (23000, 63.6),
                                  "bp-last-k(k=6)": (1000, 68.2), "sparse-update(preset=99kb)+odt": (262, 87.4)}}
    points = [figures.AccuracyPoint(model, label, Value(kib * 1024, "measured"), Value(acc / 100, "measured"))
              for model, labels in quickstart.items() for label, (kib, acc) in labels.items()]
    fig = figures.accuracy_figure("title", points)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    ax = fig.axes[0]
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert sorted(t.get_text() for t in ax.texts) == sorted(p.label for p in points)
    assert not [(a.get_text(), b.get_text()) for (a, box_a), (b, box_b) in
                itertools.combinations(zip(ax.texts, boxes), 2) if box_a.overlaps(box_b)]
    frame = ax.get_window_extent(renderer)
    assert all(frame.x0 <= box.x0 and box.x1 <= frame.x1 for box in boxes)
    figures.png_bytes(fig)


def test_sig3():
    cases = {12.345: "12.3", 9.996: "10.0", 1234.0: "1230", 0.012345: "0.0123", 0.0: "0"}
    assert {x: sig3(x) for x in cases} == cases


def test_import_does_not_load_torch():
    code = "import harness.report, sys; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True)


def test_cells_of_another_mode_get_their_own_group_and_figure(tmp_path):
    records = [journal_record("full"),
               journal_record("full", backward=80.0, mode="overhead", overhead=pairs(FAST, SLOW))]
    text = render_journal(records, tmp_path / "r")
    performance = parse_table(section(text, "local · mbv2-w0.35 · synthetic · 128 px · batch 1\n"))
    paired = parse_table(section(text, "local · mbv2-w0.35 · synthetic · 128 px · batch 1 · overhead mode"))
    assert cell(performance[0], "backward (ms") == "40.0 [38.0–42.0]"  # not replaced by the other mode's
    assert cell(paired[0], "backward (ms") == "80.0 [76.0–84.0]"
    links = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert {"latency_local_mbv2-w0.35_synthetic_r128_b1.png",
            "latency_local_mbv2-w0.35_synthetic_r128_b1_overhead.png"} <= set(links)


NEW_SECTIONS = ("## Devices", "## Timer overhead", "## Cross-check: saved bytes", "## Calibration",
                "## System checks")


def test_an_old_journal_without_the_new_keys_still_renders(tmp_path):
    records = [journal_record("full"), journal_record("bias-only", backward=30.0)]
    text = render_journal(records, tmp_path / "r")
    rows = parse_table(section(text, "local · mbv2-w0.35 · synthetic"))
    assert [(r["label"], r["n"], r["warm-up"]) for r in rows] == [("full", "21", "5"),
                                                                 ("bias-only", "21", "5")]
    assert cell(rows[1], "backward ×full") == format_ci(ratio_ci(spread(30.0), spread(40.0)))
    assert not [heading for heading in NEW_SECTIONS if heading in text]


@pytest.fixture(scope="module")
def new_report(tmp_path_factory):
    return render_journal(new_records(), tmp_path_factory.mktemp("new") / "report")


def test_warm_up_is_the_calibrations_where_recorded(new_report):
    rows = parse_table(section(new_report, "local · mbv2-w0.35 · synthetic"))
    assert {r["label"]: r["warm-up"] for r in rows} == {"full": "12", "bias-only": "36", "last-layer": "5"}


BIAS_CELL, FULL_CELL, LAST_CELL = (f"mbv2-w0.35-{label}-synthetic-r128-b1"
                                   for label in ("bias-only", "full", "last-layer"))


def test_timer_overhead_section_shows_the_paired_cis_and_judges_the_reported_time(new_report):
    rows = parse_table(section(new_report, "Timer overhead"))
    assert [r["cell"] for r in rows] == [BIAS_CELL, FULL_CELL]
    slow, slower, fast = (paired_ratio_ci(arm, BARE) for arm in (SLOW, SLOWER, FAST))
    assert fast.low < fast.high <= 1.03 < slow.low
    for row, (reported, whole), warmup, verdict in ((rows[0], (slow, slower), "36", "no"),
                                                    (rows[1], (fast, slow), "12", "yes")):
        for header, ci in (("reported/bare [95% CI]", reported), ("with message/bare [95% CI]", whole)):
            assert cell(row, header) == f"×{ci.estimate:.3f} [{ci.low:.3f}–{ci.high:.3f}]"
        assert (row["n pairs"], row["warm-up"], row["order"]) == ("21", warmup, "ABBA")
        # the verdict is on the reported step time: full's message costs 10 %, outside its step
        assert cell(row, "CI high ≤ 1.03") == verdict


def test_saved_bytes_cross_check_says_whether_hooks_and_allocator_agree(new_report):
    rows = parse_table(section(new_report, "Cross-check: saved bytes"))
    assert [r["series"] for r in rows] == [BIAS_CELL, FULL_CELL]  # last-layer has no allocator figure
    assert [r["n cells"] for r in rows] == ["1", "1"]
    keys = ("hooks (KiB)", "allocator (KiB)", "difference (KiB)", "of allocator", "agree")
    # 6 KiB apart: more than max(10 % of 2 KiB, 1 KiB); 4.7 KiB apart: within 10 % of 195 KiB
    assert [rows[0][k] for k in keys] == ["8.0", "2.0", "+6.0", "+300.0%", "no"]
    assert [rows[1][k] for k in keys] == ["200.0", "195.3", "+4.7", "+2.4%", "yes"]


def test_calibration_section_shows_the_decisions_and_placement(new_report):
    rows = {r["series"]: r for r in parse_table(section(new_report, "Calibration"))}
    assert list(rows) == [BIAS_CELL, FULL_CELL, LAST_CELL]
    keys = ("warm-up (min–max)", "stopped", "window", "tolerance", "step estimate (ms)",
            "timer resolution (ns)", "timed steps", "timed because", "threads", "cpus")
    assert [rows[FULL_CELL][k] for k in keys] == \
        ["12 (5–36)", "stable", "3", "5%", "47.0", "1", "21", "plan", "1", "1"]
    assert [rows[BIAS_CELL][k] for k in keys] == \
        ["36 (5–36)", "max-steps", "3", "5%", "47.0", "1", "21", "min-time (≥ 1000 ms)", "2", "0,1"]
    assert [rows[LAST_CELL][k] for k in keys] == ["—"] * 8 + ["1", "—"]


def _seeded(record, seed):
    """``record`` as the cell of its job at another seed (a repeat of the same series)."""
    job = dict(record["job"], seed=seed)
    return dict(record, job=job, cell_id=Job.from_json(job).cell_id)


def test_checks_of_repeated_cells_are_one_row_per_series_with_spans_and_counts(tmp_path):
    records = [_seeded(journal_record("full", allocator=allocator, calibration=calibration(*decisions),
                                      placement={"threads": 2, "cpus": [0, 1]}), seed)
               for seed, allocator, decisions in ((0, 200_000, (12,)), (1, 200_000, (12,)),
                                                  (2, 150_000, (36, "max-steps", "min-time")))]
    report = render_journal(records, tmp_path / "out")
    text = section(report, "Cross-check: saved bytes")
    (row,) = parse_table(text)
    keys = ("series", "n cells", "hooks (KiB)", "allocator (KiB)", "difference (KiB)", "of allocator", "agree")
    # hooks 200 KiB each; the third allocator figure is 53.5 KiB below them, over 10 % of it
    assert [row[k] for k in keys] == [FULL_CELL, "3", "200.0", "146.5–195.3", "+4.7–+53.5", "+2.4%–+36.5%",
                                      "2 of 3"]
    assert f"- local · {FULL_CELL}-s2: hooks 200.0 KiB, allocator 146.5 KiB" in text.splitlines()
    (row,) = parse_table(section(report, "Calibration"))
    keys = ("n cells", "warm-up (min–max)", "stopped", "step estimate (ms)", "timed steps", "timed because",
            "threads", "cpus")
    assert [row[k] for k in keys] == ["3", "12–36 (5–36)", "stable ×2, max-steps ×1", "47.0", "21",
                                      "plan ×2, min-time (≥ 1000 ms) ×1", "2", "0,1"]


def test_system_checks_section_lists_advice_once_with_its_cell_count(new_report):
    text = section(new_report, "System checks")
    assert "### local" in text
    items = [line for line in text.splitlines() if line.startswith("- ")]
    assert items == ["- cpu_governor = ondemand: set the CPU governor to performance (1 of 3 cells)",
                     "- cpu_governor = powersave: set the CPU governor to performance (2 of 3 cells)"]
    assert "Unavailable on this target: thermal." in text
    assert "load" not in text  # ok checks are not advice


def _accuracy_rows(label, accuracies):
    """Rows of one method's cells over an lr grid: ``accuracies`` {lr: [accuracy per seed]}."""
    rows = []
    for lr, per_seed in accuracies.items():
        for seed, value in enumerate(per_seed):
            record = dict(GROUP, data="mnist5k-transfer", run_id="run-1", cell_id=f"{label}-{lr}-{seed}",
                          name=f"{label}-{lr}-{seed}", series=label, warmup=5, method=label.split("(")[0],
                          label=label, status="ok", lr=lr, seed=seed)
            rows.append(_row(record, "accuracy_after", value, "fraction", per="run"))
    return rows


def test_the_accuracy_grid_shows_means_per_rate_and_the_gap_closed_at_best_rates(tmp_path):
    rows = (_accuracy_rows("full", {0.1: [0.96, 0.98], 0.3: [0.90, 0.92]})
            + _accuracy_rows("last-layer", {0.1: [0.70, 0.72], 0.3: [0.76, 0.78]})
            + _accuracy_rows("sparse-update(preset=99kb)", {0.1: [0.94, 0.96], 0.3: [0.50, 0.60]}))
    text = section(render(table(rows), tmp_path, []).read_text(), "Accuracy over the learning-rate grid")
    got = {r["method"]: r for r in parse_table(text)}
    assert list(got) == ["full", "last-layer", "sparse-update(preset=99kb)"]
    assert got["full"]["lr 0.1"] == "97.0 [96.0–98.0] (n=2)" and got["full"]["best lr"] == "0.1"
    assert got["last-layer"]["best lr"] == "0.3"
    # (0.95 - 0.77) / (0.97 - 0.77) = 0.9
    assert cell(got["sparse-update(preset=99kb)"], "gap closed").startswith("0.900 [")
    assert got["full"][next(k for k in got["full"] if k.startswith("gap closed"))] == "—"


def test_no_accuracy_grid_for_one_cell_per_method(report):
    assert "Accuracy over the learning-rate grid" not in report


def test_gradfilter_closes_the_gap_to_exact_backprop_through_the_same_layers(tmp_path):
    worse = [0.2, 0.2, 0.2]
    rows = (_accuracy_rows("full", {0.1: [0.99, 0.99, 0.99], 0.3: worse})
            + _accuracy_rows("bp-last-k(k=4)", {0.1: [0.90, 0.92, 0.91], 0.3: worse})
            + _accuracy_rows("last-layer", {0.1: [0.70, 0.72, 0.71], 0.3: worse})
            + _accuracy_rows("gradfilter(k=4,patch=2)+odt", {0.1: [0.88, 0.90, 0.89], 0.3: worse})
            + _accuracy_rows("gradfilter(k=2,patch=2)+odt", {0.1: [0.88, 0.90, 0.89], 0.3: worse})
            + _accuracy_rows("gradfilter-compact(k=4,patch=2)+odt", {0.1: [0.89, 0.91, 0.90], 0.3: worse}))
    text = section(render(table(rows), tmp_path, []).read_text(), "Accuracy over the learning-rate grid")
    got = {r["method"]: r for r in parse_table(text)}
    assert cell(got["gradfilter(k=4,patch=2)+odt"], "gap closed").startswith("0.900 [")  # (0.89-0.71)/(0.91-0.71)
    assert cell(got["gradfilter(k=2,patch=2)+odt"], "gap closed") == "—"  # no bp-last-k(k=2) in the group
    assert cell(got["gradfilter-compact(k=4,patch=2)+odt"], "gap closed").startswith("0.950 [")  # (0.90-0.71)/(0.91-0.71)
    assert cell(got["bp-last-k(k=4)"], "gap closed").startswith("0.714 [")  # (0.91-0.71)/(0.99-0.71)


def _episode_rows(label, accuracies):
    """The rows of one method's few-shot cells, one ok record per episode (seed)."""
    rows = []
    for seed, accuracy in enumerate(accuracies):
        for row in ok_rows(label, accuracy=accuracy, data="mnist5k-fewshot"):
            rows.append(dict(row, seed=seed, episode="5way-5shot", checkpoint=None,
                             cell_id=f"{row['cell_id']}-s{seed}"))
    return rows


def test_few_shot_cells_show_their_accuracy_over_the_episodes_not_one_episodes(tmp_path, monkeypatch):
    rows = _episode_rows("full", [0.9, 0.5, 0.7]) + _episode_rows("last-layer", [0.6, 0.4, 0.2])
    drawn = []
    monkeypatch.setattr(figures, "png_bytes", lambda fig: drawn.append(fig.axes[0].get_title()) or PNG_SIGNATURE)
    text = render(table(rows), tmp_path, []).read_text()
    [latency] = [title for title in drawn if title.startswith("Latency breakdown")]
    assert latency.endswith("\none record per label, the latest (the report lists them under \"Repeated records\")")
    group = section(text, "local · mbv2-w0.35 · mnist5k-fewshot")
    assert "Few-shot cells: each label ran one cell per episode" in group
    assert not any(key.startswith("acc.") for key in parse_table(group)[0])  # the last episode's 70 % is not shown
    assert "## Accuracy vs backward memory" not in text
    fewshot = section(text, "Few-shot episodes")
    assert [r["after % [95% CI]"].split()[0] for r in parse_table(fewshot.split("### ")[1])] == ["70.0", "40.0"]
    [image] = re.findall(r"\]\((fewshot-accuracy_[^)]+\.png)\)", fewshot)
    assert (tmp_path / image).read_bytes().startswith(PNG_SIGNATURE)


def test_few_shot_and_other_cells_each_get_their_accuracy_figure(tmp_path):
    rows = _episode_rows("full", [0.9, 0.5]) + ok_rows("full", accuracy=0.95, data="mnist5k-transfer")
    text = render(table(rows), tmp_path, []).read_text()
    accuracy = section(text, "Accuracy vs backward memory")
    assert re.findall(r"\]\((accuracy_[^)]+)\)", accuracy) == ["accuracy_local_mnist5k-transfer_r128_b1.png"]
    [plain] = parse_table(section(text, "local · mbv2-w0.35 · mnist5k-transfer"))
    assert plain["acc. after (%, measured)"] == "95.0"


def test_cells_over_a_learning_rate_grid_plot_each_labels_mean_at_its_best_rate(tmp_path, monkeypatch):
    def grid(label, by_lr, saved):
        rows = []
        for lr, per_seed in by_lr.items():
            for seed, accuracy in enumerate(per_seed):
                for row in ok_rows(label, accuracy=accuracy, saved=saved, data="mnist5k-transfer"):
                    rows.append(dict(row, lr=lr, seed=seed, cell_id=f"{row['cell_id']}-{lr}-{seed}"))
        return rows

    # the latest record by cell id of each label is its worst: lr 0.3, seed 1
    rows = grid("full", {0.1: [0.9, 0.8], 0.3: [0.5, 0.1]}, 204800.0) + grid("last-layer", {0.1: [0.6, 0.7]}, 1024.0)
    drawn = []
    monkeypatch.setattr(figures, "png_bytes", lambda fig: drawn.append(fig) or PNG_SIGNATURE)  # keep them
    text = render(table(rows), tmp_path, []).read_text()
    group = section(text, "local · mbv2-w0.35 · mnist5k-transfer")
    assert "Some labels ran at several learning rates or seeds" in group
    assert not any(key.startswith("acc.") for key in parse_table(group)[0])
    [fig] = [f for f in drawn if f.axes[0].get_title().startswith("Accuracy vs measured backward memory")]
    [scatter] = [c for c in fig.axes[0].collections if isinstance(c, PathCollection)]
    assert sorted(map(tuple, scatter.get_offsets().round(6))) == [(1.0, 65.0), (200.0, 85.0)]  # KiB, mean at best lr
    labels = {t.get_text().replace("\n", "") for t in fig.axes[0].texts}
    assert labels == {"full · lr 0.1", "last-layer · lr 0.1"}
    assert "best lr" in fig.axes[0].get_ylabel()
    for f in drawn:
        figures.plt.close(f)


def test_paired_records_from_before_fault_counts_show_a_dash(tmp_path):
    """A journal written before the paired mode counted page faults still renders, with a dash."""
    exact = {"forward_ns": list(spread(5.0)), "backward_ns": list(spread(80.0)), "update_ns": list(spread(2.0))}
    exact["step_ns"] = list(map(sum, zip(*exact.values())))
    record = journal_record("bp-last-k", mode="paired", paired={"order": "ABBA", "exact": exact})
    (row,) = parse_table(section(render_journal([record], tmp_path / "report"),
                                 "Gradient filtering against exact backprop"))
    assert row["exact faults/step"] == row["filtered faults/step"] == "—"
    assert row["backward speedup [95% CI]"].startswith("×2.00 [")  # 80 ms exact against 40 ms


PROBE_HOW = "best of 7 after one untimed run: copy of 256 MiB fp32, 512 x 512 fp32 mm, 1000 in-place adds"
DESCRIBED = {"board": "x86_64", "cpu_model": "Xeon", "cpu_count": 2, "memory_capacity_bytes": 24 * 2**30,
             "os": "Linux-6.1", "python": "3.11.7", "torch": "2.13.0+cpu", "torch_threads": 2,
             "governor": None, "gpu": None, "malloc_env": {},
             "probe": {"copy_bytes_per_s": 26.44e9, "gemm_flop_per_s": 347.6e9, "op_dispatch_ns": 1918.0,
                       "threads": 2, "how": PROBE_HOW}}


def test_devices_section_has_one_row_per_run_with_its_probe(tmp_path):
    old_agent = {key: value for key, value in DESCRIBED.items() if key != "probe"}
    failed = dict(journal_record("last-layer", run_id="run-3"), status="failed",
                  error={"failure": "crash", "message": "closed the stream", "detail": ""})
    del failed["measurement"]
    records = [dict(journal_record("full", run_id="run-2"), device=DESCRIBED),
               dict(journal_record("bias-only", run_id="run-2"), device=DESCRIBED),
               dict(journal_record("bp-last-k", run_id="run-1"),
                    device=dict(old_agent, malloc_env={"MALLOC_TRIM_THRESHOLD_": "1", "MALLOC_ARENA_MAX": "2"})),
               dict(failed, device=dict(DESCRIBED, cpu_model="Cortex-A72", board="aarch64"))]
    text = section(render_journal(records, tmp_path / "r"), "Devices")
    rows = parse_table(text)
    assert [(r["run"], r["CPU"]) for r in rows] == [("run-1", "Xeon (x86_64)"), ("run-2", "Xeon (x86_64)"),
                                                   ("run-3", "Cortex-A72 (aarch64)")]
    old, new = rows[0], rows[1]
    assert (new["copy (GB/s, measured)"], new["GEMM (GFLOP/s, measured)"], new["torch call (µs, measured)"],
            new["probe threads"]) == ("26.4", "348", "1.92", "2")
    assert {old[key] for key in ("copy (GB/s, measured)", "GEMM (GFLOP/s, measured)",
                                 "torch call (µs, measured)", "probe threads")} == {"—"}
    assert old["allocator env"] == "MALLOC_ARENA_MAX=2, MALLOC_TRIM_THRESHOLD_=1"
    assert (new["allocator env"], new["governor"], new["memory (GiB)"], new["torch (threads)"]) == (
        "default", "—", "24.0", "2.13.0+cpu (2)")
    assert text.count(f"- probe: {PROBE_HOW}") == 1
