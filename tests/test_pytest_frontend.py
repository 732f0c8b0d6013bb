"""``pytest suites --target local --plan P``: the same runner and journal as ``odt-bench run``,
with the device's step times in pytest-benchmark's own files and tools."""
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.journal import read_journal

ROOT = Path(__file__).resolve().parent.parent
PLAN = """
name = "tiny"
[defaults]
model = "mbv2-w0.35"
data = "synthetic"
resolution = 32
steps = 3
warmup = 1
[[cells]]
method = ["last-layer", "bias-only"]
"""


def _pytest(*args, cwd):
    return subprocess.run([sys.executable, "-m", "pytest", str(ROOT / "suites"), "-p", "no:cacheprovider",
                           "--rootdir", str(ROOT), "-c", str(ROOT / "pyproject.toml"), *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600, env=dict(os.environ))


def _journal(results):
    (path,) = sorted(Path(results, "local").glob("tiny-*.jsonl"))
    records, problems = read_journal(path)
    assert not problems
    return path, {r["cell_id"]: r for r in records}


def _shape(record):
    """Everything but the measured values: keys, job, figure names and their units and sources."""
    m = record["measurement"]
    return {"keys": sorted(record), "job": record["job"], "measurement": sorted(m),
            "samples": sorted(m["samples"]), "update_plan": record["update_plan"],
            "figures": {k: (v["unit"], v["source"]) for k, v in m["figures"].items()}}


@pytest.fixture(scope="module")
def both(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("frontends")
    plan = tmp / "tiny.toml"
    plan.write_text(PLAN)
    done = _pytest("--plan", str(plan), "--results", str(tmp / "py"), "--benchmark-json",
                   str(tmp / "pytest-benchmark.json"), "--benchmark-autosave", cwd=tmp)
    assert done.returncode == 0, done.stdout + done.stderr
    assert main(["run", "--plan", str(plan), "--results", str(tmp / "cli")]) == 0
    return tmp, done


def test_both_front_ends_write_the_same_cells_and_fields(both):
    tmp, _ = both
    _, from_pytest = _journal(tmp / "py")
    _, from_cli = _journal(tmp / "cli")
    assert set(from_pytest) == set(from_cli) and len(from_cli) == 2
    for cell_id, record in from_cli.items():
        assert _shape(from_pytest[cell_id]) == _shape(record)
        assert from_pytest[cell_id]["status"] == "ok"
    for results in ("py", "cli"):
        journal, _ = _journal(tmp / results)
        assert main(["report", str(journal), "-o", str(tmp / ("report-" + results))]) == 0
        assert "mbv2-w0.35" in (tmp / ("report-" + results) / "report.md").read_text()


def test_pytest_benchmark_holds_the_device_step_times_and_fingerprint(both):
    tmp, done = both
    _, records = _journal(tmp / "py")
    document = json.loads((tmp / "pytest-benchmark.json").read_text())
    assert document["machine_info"]["target"] == "local"
    device = next(iter(records.values()))["device"]
    assert document["machine_info"]["cpu_model"] == device["cpu_model"]
    by_cell = {b["extra_info"]["cell_id"]: b for b in document["benchmarks"]}
    assert set(by_cell) == set(records)
    for cell_id, record in records.items():
        steps = record["measurement"]["samples"]["step_ns"]
        stats = by_cell[cell_id]["stats"]
        assert stats["rounds"] == len(steps)
        assert stats["median"] == pytest.approx(statistics.median(steps) / 1e9, rel=1e-9)
        assert stats["min"] == pytest.approx(min(steps) / 1e9, rel=1e-9)
        assert by_cell[cell_id]["extra_info"]["samples"]["step_ns"] == steps  # integer ns kept
    assert "odt-bench pytest-benchmark file:" in done.stdout


def test_the_target_storage_holds_both_files_for_pytest_benchmark_tools(both):
    tmp, _ = both
    storage = "file://%s" % (tmp / "py" / "local")
    tool = str(Path(sys.executable).parent / "pytest-benchmark")
    listed = subprocess.run([tool, "--storage", storage, "list"], capture_output=True, text=True, timeout=120)
    assert listed.returncode == 0, listed.stderr
    files = [line for line in listed.stdout.splitlines() if line.strip().endswith(".json")]
    assert len(files) == 2  # the harness's export and pytest-benchmark's own autosave
    compared = subprocess.run([tool, "--storage", storage, "compare", "--group-by", "param:cell"],
                              capture_output=True, text=True, timeout=120)
    assert compared.returncode == 0, compared.stderr
    assert "mbv2-w0.35-bias-only-synthetic-r32-b1" in compared.stdout


def test_k_selects_the_same_cells_in_both_front_ends(tmp_path, capsys):
    expression = "bias and not last"
    main(["run", "--plan", "default", "-k", expression, "--dry-run"])
    cli = {line.split()[1] for line in capsys.readouterr().out.splitlines() if line.startswith("c")}
    done = _pytest("--plan", "default", "-k", expression, "--collect-only", "-q", cwd=tmp_path)
    collected = {line.split("[", 1)[1].rstrip("]") for line in done.stdout.splitlines() if "::test_cell[" in line}
    assert cli and cli == collected


@pytest.mark.parametrize("args,text", [
    (["--plan", "nope"], "unknown plan 'nope'; known plans"),
    (["--plan", "quick", "--set", "stepz=3"], "--set stepz: unknown key"),
])
def test_a_bad_plan_is_a_usage_error_naming_it(tmp_path, args, text):
    done = _pytest(*args, "--collect-only", "-q", cwd=tmp_path)
    assert done.returncode == pytest.ExitCode.USAGE_ERROR, done.stdout + done.stderr
    assert text in done.stdout + done.stderr
