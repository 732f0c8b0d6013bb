"""Journals exported as pytest-benchmark files, read back by the real ``pytest-benchmark`` CLI."""
import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest

from harness.cli import main
from harness.export import ExportError, benchmark_document, export_journal
from harness.job import Job, unique_names
from harness.journal import Journal, JournalError, read_journal

PYTEST_BENCHMARK = Path(sys.executable).with_name("pytest-benchmark")


def _cli(storage, *args, cwd):
    """The real ``pytest-benchmark`` command line on the file storage ``storage``."""
    assert PYTEST_BENCHMARK.exists(), "pytest-benchmark's console script is not next to %s" % (
        sys.executable)
    proc = subprocess.run([str(PYTEST_BENCHMARK), "--storage", "file://%s" % storage, *args],
                          capture_output=True, text=True, cwd=cwd, timeout=120,
                          env=dict(os.environ, COLUMNS="300"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Failed to load" not in proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def real_journal(tmp_path_factory, artifact_cache):
    """A journal written by the real runner on the local target: one tiny cell."""
    results = tmp_path_factory.mktemp("results")
    assert main(["run", "--model", "mbv2-w0.35", "--method", "last-layer", "--resolution", "32",
                 "--steps", "3", "--warmup", "1", "--results", str(results)]) == 0
    (path,) = sorted((results / "local").glob("*.jsonl"))
    (record,) = read_journal(path)[0]
    return path, record


def _load(path):
    return json.loads(Path(path).read_text())


def test_the_real_runner_s_journal_exports_device_step_times_as_stats(real_journal, tmp_path):
    journal, record = real_journal
    out = export_journal(journal, tmp_path)
    assert out == tmp_path / ("0001_%s.json" % journal.stem)
    doc = _load(out)
    assert set(doc) >= {"machine_info", "commit_info", "benchmarks", "datetime", "version"}
    (bench,) = doc["benchmarks"]
    job = Job.from_json(record["job"])
    assert bench["name"] == "test_cell[%s]" % job.name
    assert bench["fullname"] == "suites/test_benchmarks.py::test_cell[%s]" % job.name
    assert bench["param"] == job.name and bench["params"] == {"cell": job.name}
    assert bench["group"] == "mbv2-w0.35, synthetic, r32, b1"

    step_ns = record["measurement"]["samples"]["step_ns"]
    stats = bench["stats"]
    assert stats["rounds"] == len(step_ns) and stats["iterations"] == 1
    assert math.isclose(stats["median"], statistics.median(step_ns) / 1e9, rel_tol=1e-12)
    assert math.isclose(stats["mean"], statistics.mean(step_ns) / 1e9, rel_tol=1e-12)
    assert stats["min"] == min(step_ns) / 1e9 and stats["max"] == max(step_ns) / 1e9
    assert stats["data"] == [ns / 1e9 for ns in step_ns]
    assert math.isclose(stats["ops"], len(step_ns) / (sum(step_ns) / 1e9), rel_tol=1e-12)

    extra = bench["extra_info"]
    assert extra["samples"] == record["measurement"]["samples"]
    assert extra["warmup_samples"] == record["measurement"]["warmup_samples"]
    assert all(type(ns) is int for part in extra["samples"].values() for ns in part)
    assert extra["figures"] == record["measurement"]["figures"]
    assert (extra["cell_id"], extra["target"], extra["run_id"], extra["plan"]) == (
        record["cell_id"], "local", journal.stem, "adhoc")
    assert extra["job"] == record["job"] and extra["provenance"] == record["provenance"]
    for key in ("calibration", "placement", "system_checks", "overhead"):
        if key in record["measurement"]:
            assert extra[key] == record["measurement"][key]
    assert bench["options"]["warmup"] == 1 and bench["options"]["min_rounds"] == 3
    assert bench["options"]["timer"].startswith("device ")

    device, machine = record["device"], doc["machine_info"]
    assert machine["target"] == "local"
    assert (machine["node"], machine["machine"], machine["python_version"]) == (
        device["hostname"], device["board"], device["python"])
    assert all(machine[k] == v for k, v in device.items())
    assert machine["python_implementation"] is None  # the device did not say; not the host's
    assert doc["commit_info"]["id"] == record["provenance"]["git_sha"]
    assert doc["commit_info"]["dirty"] == record["provenance"]["git_dirty"]
    assert doc["failed_cells"] == [] and doc["odt_bench"]["journal_problems"] == []


def test_exports_are_numbered_like_pytest_benchmark_s_storage_and_never_overwrite(real_journal,
                                                                                  tmp_path):
    journal, _ = real_journal
    first = export_journal(journal, tmp_path)
    before = first.read_bytes()
    second = export_journal(journal, tmp_path)
    assert (first.name, second.name) == ("0001_%s.json" % journal.stem, "0002_%s.json" % journal.stem)
    assert first.read_bytes() == before
    # pytest-benchmark's FileStorage also counts the runs in sub-directories (per machine id)
    (tmp_path / "Linux-CPython-3.11-64bit").mkdir()
    (tmp_path / "Linux-CPython-3.11-64bit" / "0007_other.json").write_text("{}")
    assert export_journal(journal, tmp_path).name == "0008_%s.json" % journal.stem
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_file()) == [
        "0001_%s.json" % journal.stem, "0002_%s.json" % journal.stem, "0008_%s.json" % journal.stem]


def test_the_default_storage_is_the_journal_s_directory(real_journal, tmp_path):
    journal, _ = real_journal
    copy = tmp_path / "local" / journal.name
    copy.parent.mkdir()
    copy.write_bytes(journal.read_bytes())
    assert export_journal(copy) == copy.parent / ("0001_%s.json" % journal.stem)


def test_pytest_benchmark_list_and_compare_read_the_exported_files(real_journal, tmp_path):
    journal, record = real_journal
    storage = tmp_path / "storage"
    files = [export_journal(journal, storage) for _ in range(2)]
    listed = _cli(storage, "list", cwd=tmp_path).split()
    assert listed == [str(f) for f in files]

    name = Job.from_json(record["job"]).name
    median_ms = "{0:,.4f}".format(_load(files[0])["benchmarks"][0]["stats"]["median"] * 1e3)
    rounds = str(len(record["measurement"]["samples"]["step_ns"]))
    table = _cli(storage, "compare", "0001", "0002", "--time-unit", "ms", cwd=tmp_path)
    assert table.count("test_cell[%s]" % name) == 2
    assert "Name (time in ms)" in table and median_ms in table and rounds in table
    assert "benchmark 'mbv2-w0.35, synthetic, r32, b1': 2 tests" in table

    table = _cli(storage, "compare", "0001", "0002", "--group-by", "param:cell",
                 "--columns", "median,iqr,rounds", "--time-unit", "ms", cwd=tmp_path)
    assert "benchmark 'cell=%s': 2 tests" % name in table and median_ms in table
    (header,) = [line for line in table.splitlines() if line.startswith("Name (time in ms)")]
    assert header.split()[4:] == ["Median", "IQR", "Rounds"]

    table = _cli(storage, "compare", str(files[0]), str(files[1]), "--between", "median",
                 "--time-unit", "ms", cwd=tmp_path)
    assert "2 sources" in table and "+0.0%" in table and median_ms in table


# journals made by hand: several cells, failures, a torn line

DEVICE = {"board": "aarch64", "hostname": "pi-4", "os": "Linux-6.6-aarch64", "cpu_model": "Cortex-A72",
          "cpu_count": 4, "memory_capacity_bytes": 4 * 2 ** 30, "governor": "performance",
          "python": "3.9.2", "torch": "1.13.1"}
PROVENANCE = {"schema_version": 1, "git_sha": "a" * 40, "git_dirty": False,
              "packages": {"odt-bench": "0.1.0"}, "host": {"python": "3.11.7"}}


def _job(method="last-layer", **kw):
    return Job(**dict(dict(model="mbv2-w0.35", method=method, resolution=64, steps=5, warmup=2), **kw))


def _ok(job, step_ns, target="pi", **measurement):
    n = len(step_ns)
    return {"target": target, "cell_id": job.cell_id, "run_id": "quick-20261122T000000Z",
            "plan": "quick", "status": "ok", "job": job.to_json(), "provenance": PROVENANCE,
            "device": DEVICE,
            "update_plan": {"bn": "fold", "layers": [
                {"index": 0, "kind": "conv", "name": "stem.conv", "update": "frozen"},
                {"index": 1, "kind": "linear", "name": "classifier", "update": "weight"}]},
            "measurement": dict({
                "samples": {"forward_ns": [t // 2 for t in step_ns],
                            "backward_ns": [t // 3 for t in step_ns],
                            "update_ns": [t - t // 2 - t // 3 for t in step_ns],
                            "step_ns": list(step_ns)},
                "warmup_samples": {"forward_ns": [9], "backward_ns": [9], "update_ns": [9],
                                   "step_ns": [27]},
                "clock": {"unit": "ns"}, "agent": "odt-bench-agent/0.1.0", "regions": [],
                "figures": {"peak_rss_bytes": {"value": 123, "unit": "bytes", "source": "measured",
                                               "per": "run", "reason": None, "how": "VmHWM"}},
                "health": {}, "trace": None, "clock_offset": None}, **measurement)}


def _failed(job, target="pi"):
    return {"target": target, "cell_id": job.cell_id, "run_id": "quick-20261122T000000Z",
            "plan": "quick", "status": "failed", "job": job.to_json(), "provenance": PROVENANCE,
            "error": {"failure": "timeout", "message": "no step in 600 s", "detail": ""}}


def _journal(path, records):
    journal = Journal(path)
    for record in records:
        journal.append(record)
    return path


def test_failed_cells_are_listed_apart_and_the_latest_record_of_a_cell_wins():
    a, b, c = _job(), _job("bias-only"), _job("full")
    extras = {"calibration": {"warmup_steps": 7}, "placement": {"cpus": [2, 3]},
              "system_checks": [{"name": "governor", "status": "ok"}], "overhead": None}
    records = [_failed(a), _ok(a, [4000, 1000, 3000, 2000], **extras), _ok(b, [5, 6, 7]),
               _failed(b), _failed(c)]
    doc = benchmark_document(records)
    (bench,) = doc["benchmarks"]
    assert bench["param"] == a.name and math.isclose(bench["stats"]["median"], 2500 / 1e9)
    assert bench["stats"]["rounds"] == 4 and bench["stats"]["data"] == [4e-6, 1e-6, 3e-6, 2e-6]
    assert all(bench["extra_info"][k] == v for k, v in extras.items())
    assert bench["extra_info"]["attempts"] == 2
    assert bench["extra_info"]["update_plan"] == {
        "bn": "fold", "layers": 2, "updates": {"frozen": 1, "weight": 1},
        "updated_layers": ["classifier"]}
    assert bench["options"]["timer"] == "device time.perf_counter_ns (ns, replayed from the journal)"
    assert [(f["name"], f["error"]["failure"]) for f in doc["failed_cells"]] == [
        (b.name, "timeout"), (c.name, "timeout")]
    assert [f["attempts"] for f in doc["failed_cells"]] == [2, 1]
    assert doc["machine_info"]["node"] == "pi-4" and doc["machine_info"]["target"] == "pi"
    assert doc["commit_info"]["id"] == "a" * 40 and doc["commit_info"]["dirty"] is False
    assert (doc["odt_bench"]["cells"], doc["odt_bench"]["benchmarks"], doc["odt_bench"]["failed"]) == (
        3, 1, 2)


def test_cells_that_share_a_name_get_what_tells_them_apart_added():
    short, long_ = _job(steps=5), _job(steps=50)
    doc = benchmark_document([_ok(short, [1, 2, 3]), _ok(long_, [4, 5, 6])])
    names = sorted(b["param"] for b in doc["benchmarks"])
    assert names == sorted(["%s-steps5" % short.name, "%s-steps50" % long_.name])
    assert len({b["group"] for b in doc["benchmarks"]}) == 1


def test_cells_that_differ_only_in_what_names_leave_out_get_their_cell_id_added():
    a, b = _job(lr=0.1), _job(lr=0.1000001)  # both print as lr0.1
    assert unique_names([a, b]) == {a.cell_id: "%s-lr0.1-%s" % (a.name, a.cell_id),
                                    b.cell_id: "%s-lr0.1-%s" % (b.name, b.cell_id)}
    own, default = _job(checkpoint="mine.pt"), _job(checkpoint=None)
    assert unique_names([own, default]) == {own.cell_id: own.name + "-mine.pt", default.cell_id: default.name + "-pretrained"}
    lr = [_job(lr=0.1, seed=s) for s in (0, 1)] + [_job(lr=0.3, seed=0)]
    assert sorted(unique_names(lr).values()) == sorted("%s-lr%s-s%d" % (lr[0].name, r, s) for r, s in ((0.1, 0), (0.1, 1), (0.3, 0)))


def test_a_journal_of_several_targets_is_exported_one_target_at_a_time():
    records = [_ok(_job(), [1, 2, 3], target="pi"), _ok(_job(), [7, 8, 9], target="jetson")]
    with pytest.raises(ExportError, match="several targets"):
        benchmark_document(records)
    doc = benchmark_document(records, target="jetson")
    assert doc["machine_info"]["target"] == "jetson"
    assert doc["benchmarks"][0]["stats"]["median"] == 8e-9


def test_an_interrupted_run_s_journal_exports_what_finished(tmp_path):
    path = _journal(tmp_path / "quick-20261122T000000Z.jsonl", [_ok(_job(), [10, 20, 30])])
    with open(path, "a") as f:
        f.write('{"target": "pi", "cell_')  # killed mid-write
    doc = _load(export_journal(path))
    assert len(doc["benchmarks"]) == 1
    (problem,) = doc["odt_bench"]["journal_problems"]
    assert "corrupt journal line skipped" in problem


def test_a_journal_of_failures_only_gives_an_empty_file_that_pytest_benchmark_reads(tmp_path):
    path = _journal(tmp_path / "quick-20261122T000000Z.jsonl", [_failed(_job()), _ok(_job("full"), [])])
    out = export_journal(path)
    doc = _load(out)
    assert doc["benchmarks"] == []
    assert [f["error"]["failure"] for f in doc["failed_cells"]] == ["timeout", "no-step-samples"]
    assert doc["machine_info"]["node"] == "pi-4"  # the ok record without samples describes it
    assert doc["odt_bench"]["journal_problems"] == []
    assert _cli(tmp_path, "list", cwd=tmp_path).split() == [str(out)]
    _cli(tmp_path, "compare", cwd=tmp_path)


def test_without_an_ok_record_the_device_is_unknown_not_guessed():
    doc = benchmark_document([_failed(_job())])
    machine = doc["machine_info"]
    assert machine["target"] == "pi" and doc["benchmarks"] == []
    assert all(machine[k] is None for k in ("node", "machine", "python_version", "system"))


@pytest.mark.parametrize("content", [None, "", "\n\n", '{"torn": '])
def test_a_missing_or_empty_journal_is_an_error_naming_it(tmp_path, content):
    path = tmp_path / "quick-20261122T000000Z.jsonl"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ExportError) as info:
        export_journal(path, tmp_path / "storage")
    assert isinstance(info.value, ValueError) and isinstance(info.value, JournalError)
    assert str(path) in str(info.value)
    assert not (tmp_path / "storage").exists() or not list((tmp_path / "storage").iterdir())
