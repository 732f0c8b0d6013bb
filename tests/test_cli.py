"""The odt-bench command line end to end: real agent subprocesses, real journals, real reports."""
import json
import re
import subprocess
import sys

import pytest
import torch

from harness import cli
from harness.cli import main
from harness.journal import Journal, read_journal
from harness.plan import jobs_from
from harness.runner import Runner
from harness.target import Failure, TargetError
from targets.local import LocalTarget
from tests.helpers import stand_in_python

SMALL = """
[defaults]
resolution = 32
steps = 2
warmup = 1
[methods.bp-last-k]
k = 2
[[cells]]
model = "mbv2-w0.35"
method = ["last-layer", "bp-last-k"]
"""


def _journal_records(results):
    (path,) = sorted(results.rglob("*.jsonl"))
    return path, read_journal(path)[0]


def _run(*args):
    return main(["run", *args])


def test_quick_plan_runs_end_to_end_and_renders_a_report(tmp_path):
    results, report = tmp_path / "results", tmp_path / "report"
    proc = subprocess.run([sys.executable, "-m", "harness.cli", "run", "--plan", "quick", "--results",
                           str(results), "--report", str(report)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "[8/8]" in proc.stderr and "ETA" in proc.stderr
    path, records = _journal_records(results / "local")
    assert len(records) == 8 and all(r["status"] == "ok" for r in records)
    record = records[0]
    for key in ("measured_saved_bytes", "counted_backward_flops", "memory_bytes.saved_inputs_fp32",
                "analytic_backward.exact_backward_macs", "train_peak_bytes", "energy_j"):
        assert record["measurement"]["figures"][key]["source"] in ("measured", "analytic")
    assert record["measurement"]["figures"]["energy_j"]["value"] is None
    assert all(isinstance(v, int) for v in record["measurement"]["samples"]["step_ns"])
    provenance = record["provenance"]
    assert provenance["packages"]["torch"] and provenance["schema_version"] == 1
    assert provenance["seeds"]["derivation"] and provenance["threads"] == 1
    real = [r for r in records if r["job"]["data"] == "mnist5k-transfer"]
    assert all(r["provenance"]["artifacts"]["checkpoint"] and r["provenance"]["artifacts"]["dataset"]
               for r in real)
    # how the backbone was made, and with what: another torch or thread count gives other bytes
    [made] = real[0]["provenance"]["artifact_recipes"][real[0]["provenance"]["artifacts"]["checkpoint"]]
    assert made["recipe"]["what"] == "pretrain" and made["recipe"]["model"] == real[0]["job"]["model"]
    assert made["made"]["torch"] == torch.__version__ and made["made"]["threads"] >= 1
    assert all(0 <= r["measurement"]["figures"]["accuracy_after"]["value"] <= 1 for r in real)
    text = (report / "report.md").read_text()
    for png in re.findall(r"\]\(([^)]+\.png)\)", text):
        assert (report / png).read_bytes().startswith(b"\x89PNG")
    # the same results render to identical bytes
    again = tmp_path / "again"
    assert main(["report", str(path), "-o", str(again)]) == 0
    for f in report.iterdir():
        assert (again / f.name).read_bytes() == f.read_bytes(), f.name


@pytest.mark.parametrize("args,text", [
    (["--model", "resnet-9000", "--method", "full"], "unknown model 'resnet-9000'; known models"),
    (["--model", "mbv2-w0.35", "--method", "magic"], "unknown method 'magic'; known methods"),
    (["--model", "mbv2-w0.35", "--method", "bp-last-k"],
     "the cell of --model/--method: method 'bp-last-k' needs parameter 'k'"),
    (["--plan", "nope"], "unknown plan 'nope'; known plans"),
    (["--target", "pi-9", "--model", "mbv2-w0.35", "--method", "full"], "unknown target 'pi-9'; known targets: local"),
    (["--steps", "3"], "--steps describes a single cell"),
])
def test_bad_input_exits_2_naming_the_thing(args, text, capsys, tmp_path):
    assert _run("--results", str(tmp_path), *args) == 2
    assert text in capsys.readouterr().err


def test_help_names_every_command_and_every_exit_code(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    summary = text[text.index("The odt-bench command line:"):text.index("positional arguments")]
    commands = re.search(r"\{([a-z,-]+)\}", text).group(1).split(",")
    assert len(commands) == 9 and all(" %s," % c in summary or " %s." % c in summary for c in commands)
    for code in (cli.EXIT_OK, cli.EXIT_CELLS_FAILED, cli.EXIT_USAGE, cli.EXIT_INTERRUPTED, cli.EXIT_PIPE_CLOSED):
        assert re.search(r"[:;] %d [a-z]" % code, text[text.index("Exit codes:"):]), code
    listed = text[text.index("positional arguments"):]
    for command, following in zip(commands, commands[1:] + ["options:"]):  # its line there tops its own help
        line = re.search(r" %s (.+?) %s " % (command, following), listed).group(1)
        with pytest.raises(SystemExit):
            main([command, "--help"])
        assert line in " ".join(capsys.readouterr().out.split()), command


def test_dry_run_lists_cells(capsys):
    assert _run("--plan", "default", "--dry-run") == 0
    out = capsys.readouterr().out
    assert "20 cells" in out and "bp-last-k(k=6)" in out and "sparse-update(preset=99kb)+odt" in out


def test_a_listing_piped_into_a_reader_that_stops_early_ends_quietly():
    proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--plan", "tinytrain", "--dry-run"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.readline()  # `| head -1`: one line, then the reader closes the pipe
    proc.stdout.close()
    stderr = proc.stderr.read().decode()
    assert proc.wait(timeout=60) == 141
    assert stderr == ""


def test_a_hanging_cell_fails_and_the_run_goes_on(tmp_path, capsys):
    plan = tmp_path / "p.toml"
    plan.write_text(SMALL + '[[cells]]\nmodel = "mcunet-5fps"\nmethod = "full"\nresolution = 64\ntimeout_s = 0.2\n')
    assert _run("--plan", str(plan), "--results", str(tmp_path), "--retries", "1") == 1
    _, records = _journal_records(tmp_path)
    # a timeout may not recur: with --retries 1 the cell runs twice and both attempts are kept
    assert [(r["status"], r["attempt"]) for r in records] == [("ok", 1), ("ok", 1), ("failed", 1), ("failed", 2)]
    assert records[2]["error"]["failure"] == "timeout"
    err = capsys.readouterr().err
    assert "FAILED (timeout)" in err and "attempt 1 failed (timeout); retrying" in err
    assert sorted(p.name for p in tmp_path.rglob("0001_*.json"))  # a failed run still gets its export


def test_resume_skips_finished_cells(tmp_path):
    first = tmp_path / "first.toml"
    first.write_text(SMALL.replace('["last-layer", "bp-last-k"]', '"last-layer"'))
    both = tmp_path / "both.toml"
    both.write_text(SMALL)
    assert _run("--plan", str(first), "--results", str(tmp_path)) == 0
    path, records = _journal_records(tmp_path)
    assert _run("--plan", str(both), "--resume", str(path), "--results", str(tmp_path)) == 0
    _, records = _journal_records(tmp_path)
    assert [r["job"]["method"] for r in records] == ["last-layer", "bp-last-k"]


def test_resume_of_a_missing_journal_is_a_clear_error(tmp_path, capsys):
    assert _run("--plan", "quick", "--resume", "--results", str(tmp_path)) == 2
    assert "no journal of plan 'quick'" in capsys.readouterr().err


class InterruptedTarget(LocalTarget):
    """The local target, interrupted (as by Ctrl-C) on its second job."""

    def __init__(self):
        super().__init__()
        self.jobs = 0

    def run(self, plan, timeout_s):
        self.jobs += 1
        if self.jobs == 2:
            raise KeyboardInterrupt
        return super().run(plan, timeout_s)


def test_an_interrupted_run_keeps_every_finished_cell(tmp_path):
    import tomllib

    journal = Journal(tmp_path / "run.jsonl")
    runner = Runner(InterruptedTarget(), LocalTarget().cache, journal, "run", "small")
    with pytest.raises(KeyboardInterrupt):
        runner.run(jobs_from(tomllib.loads(SMALL)))
    records, problems = read_journal(journal.path)
    assert [r["status"] for r in records] == ["ok"] and not problems


class FlakyTarget(LocalTarget):
    """The local target whose first job dies as if the board had rebooted."""

    def __init__(self):
        super().__init__()
        self.jobs = 0

    def run(self, plan, timeout_s):
        self.jobs += 1
        if self.jobs == 1:
            raise TargetError(Failure.CRASH, "the agent died (stand-in for a lost board)")
        return super().run(plan, timeout_s)


def test_a_cell_that_crashed_once_is_retried_and_succeeds(tmp_path):
    import tomllib

    journal = Journal(tmp_path / "run.jsonl")
    jobs = jobs_from(tomllib.loads(SMALL))[:1]
    summary = Runner(FlakyTarget(), LocalTarget().cache, journal, "run", "small", retries=2).run(jobs)
    assert (summary.ok, summary.failed) == (1, 0)
    records, _ = read_journal(journal.path)
    assert [(r["status"], r["attempt"]) for r in records] == [("failed", 1), ("ok", 2)]


def test_an_invalid_cell_is_not_retried(tmp_path):
    # BatchNorm in train mode at batch 1 reaches 1x1 maps at 32 px: refused at compile time
    assert _run("--model", "mbv2-w0.35", "--method", "full", "--resolution", "32", "--retries", "3",
                "--results", str(tmp_path)) == 1
    _, records = _journal_records(tmp_path)
    assert [(r["error"]["failure"], r["attempt"]) for r in records] == [("invalid-job", 1)]


def test_an_interrupted_run_still_writes_its_pytest_benchmark_file(tmp_path, monkeypatch):
    calls = []
    real_run = LocalTarget.run

    def interrupted_on_the_second_job(self, plan, timeout_s):
        calls.append(plan["cell_id"])
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real_run(self, plan, timeout_s)

    monkeypatch.setattr(LocalTarget, "run", interrupted_on_the_second_job)
    plan = tmp_path / "p.toml"
    plan.write_text(SMALL)
    assert _run("--plan", str(plan), "--results", str(tmp_path)) == 130
    (exported,) = tmp_path.rglob("0001_*.json")
    assert [b["extra_info"]["cell_id"] for b in json.loads(exported.read_text())["benchmarks"]] == calls[:1]


def test_export_writes_a_new_file_each_time(tmp_path, capsys):
    plan = tmp_path / "p.toml"
    plan.write_text(SMALL)
    assert _run("--plan", str(plan), "--results", str(tmp_path), "-k", "last-layer") == 0
    path, _ = _journal_records(tmp_path)
    capsys.readouterr()
    assert main(["export", str(path), "--storage", str(tmp_path / "store")]) == 0
    assert main(["export", str(path), "--storage", str(tmp_path / "store")]) == 0
    assert sorted(p.name[:5] for p in (tmp_path / "store").glob("*.json")) == ["0001_", "0002_"]
    assert main(["export", str(tmp_path / "missing.jsonl")]) == 2


def test_set_overrides_job_fields_and_method_params(capsys):
    assert _run("--plan", "quick", "--dry-run", "--set", "steps=3", "--set", "bp-last-k.k=[2, 4]",
                "--set", "resolution=[48, 64]", "-k", "synthetic") == 0
    out = capsys.readouterr().out
    assert "bp-last-k(k=2)-synthetic-r48-b1  steps=3" in out and "bp-last-k(k=4)-synthetic-r64" in out
    assert "10 cells" in out  # (full, last-layer, bias-only, bp-last-k x 2) x 2 resolutions


@pytest.mark.parametrize("args,text", [
    (["--set", "stepz=3"], "--set stepz: unknown key"),
    (["--set", "steps"], "expected KEY=VALUE"),
    (["--set", "magic.k=3"], "--set magic.k: unknown method 'magic'"),
    (["--set", "steps=0"], "'steps' must be a positive integer"),
    (["-k", "nothing-like-this"], "matches none of the 8 cells"),
    (["-k", "bias and"], "expected a word"),
    (["--retries", "-1"], "--retries must be 0 or more"),
    (["--set", "cpus=1-x"], "'cpus' must be"),
    (["--set", "cpus=1", "--set", "threads=2"], "each thread needs a CPU of its own"),
])
def test_bad_overrides_and_filters_exit_2(args, text, capsys):
    assert _run("--plan", "quick", "--dry-run", *args) == 2
    assert text in capsys.readouterr().err


@pytest.mark.parametrize("what,expected", [
    ("models", ["mbv2-w0.35", "mcunet-5fps", "proxyless-w0.3", "presets: 49kb, 73kb, 99kb, 123kb, 138kb",
                "resnet18", "conv3x3-c64-r56-cl"]),
    ("methods", ["full", "last-layer", "bias-only", "bp-last-k", "parameters: k (int)", "sparse-update",
                 "parameters: preset (str)", "gradfilter", "parameters: k (int), patch (int)"]),
    ("plans", ["default", "quick", "sparse", "validate", "gradfilter"]),
    ("targets", ["local", "raspberry-pi", "jetson"]),
])
def test_list_names_what_can_be_run(what, expected, capsys):
    assert main(["list", what]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in expected)


def test_a_crashing_device_fails_every_cell_and_all_are_recorded(tmp_path):
    import tomllib

    target = LocalTarget(python=stand_in_python(tmp_path, "echo 'Segmentation fault' >&2; exit 139"))
    target._description = {"board": "stand-in"}  # describe() would hit the crashing child too
    journal = Journal(tmp_path / "run.jsonl")
    summary = Runner(target, target.cache, journal, "run", "small").run(jobs_from(tomllib.loads(SMALL)))
    assert (summary.ok, summary.failed) == (0, 2)
    records, _ = read_journal(journal.path)
    assert [r["error"]["failure"] for r in records] == ["crash", "crash"]
    assert "Segmentation fault" in records[0]["error"]["detail"]
    assert [r["device"] for r in records] == [{"board": "stand-in"}] * 2  # which device they failed on


def test_an_unreachable_target_is_a_clear_error(tmp_path, capsys, monkeypatch):
    python = stand_in_python(tmp_path, "echo 'cannot start: no torch' >&2; exit 1")
    monkeypatch.setattr("targets.local.sys.executable", python)
    assert _run("--model", "mbv2-w0.35", "--method", "full", "--results", str(tmp_path)) == 1
    err = capsys.readouterr().err
    assert "target 'local'" in err and "no torch" in err


def test_report_skips_a_corrupt_journal_line_and_names_it(tmp_path, capsys):
    plan = tmp_path / "p.toml"
    plan.write_text(SMALL)
    assert _run("--plan", str(plan), "--results", str(tmp_path / "r")) == 0
    path, _ = _journal_records(tmp_path / "r")
    with open(path, "a") as f:
        f.write("{not json\n")
    assert main(["report", str(path), "-o", str(tmp_path / "out")]) == 0
    assert "%s:3: corrupt journal line skipped" % path in capsys.readouterr().err
    assert "bp-last-k(k=2)" in (tmp_path / "out" / "report.md").read_text()


def test_report_of_nothing_is_an_error(tmp_path, capsys):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    assert main(["report", str(empty), "-o", str(tmp_path / "o")]) == 2
    assert main(["report", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o")]) == 2
    assert "no journal file or directory" in capsys.readouterr().err


def test_analyze_prints_one_json_object(capsys):
    assert main(["analyze", "--model", "mbv2-w0.35", "--resolution", "128", "--method", "bp-last-k",
                 "--k", "6", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    for key in ("params", "trainable_params", "forward_macs", "measured_saved_bytes",
                "measured_saved_with_params_bytes"):
        assert out[key]["value"] > 0
    assert out["analytic_backward"]["exact_backward_macs"]["unit"] == "MAC"
    assert out["memory_bytes"]["saved_inputs_fp32"]["source"] == "analytic"
    assert out["batch"] == 1



def test_analyze_prints_the_plan_and_one_readable_line_per_figure(capsys):
    args = ["analyze", "--model", "mbv2-w0.35", "--resolution", "64", "--method", "bp-last-k", "--k", "2"]
    assert main(args + ["--json"]) == 0
    figures = json.loads(capsys.readouterr().out)
    assert main(args) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "mbv2-w0.35 · bp-last-k(k=2) · 64 px · batch 1 · ops stock"
    assert lines[1] == ("updates 3 of 52 layers (weight ×3; BN fold): "
                        "blocks.16.dw.conv, blocks.16.pw2.conv, classifier")
    by_name = {line.split()[0]: line.split(None, 1)[1] for line in lines[2:]}
    saved = figures["measured_saved_bytes"]
    assert by_name["measured_saved_bytes"] == "{:,} bytes  measured, per batch; {}".format(saved["value"], saved["how"])
    macs = figures["analytic_backward"]["exact_backward_macs"]["value"]
    assert by_name["analytic_backward.exact_backward_macs"] == "{:,} MAC    analytic, per batch".format(macs)
    assert by_name["memory_bytes.saved_inputs_fp32"].endswith("bytes  analytic, per sample")
    leaves = {name for name, v in figures.items() if isinstance(v, dict) and "unit" in v}
    leaves |= {name + "." + part for name, v in figures.items() if isinstance(v, dict) and "unit" not in v
               for part, sub in v.items() if isinstance(sub, dict)}
    assert set(by_name) == leaves and "memory_bytes.plan_fp32" in leaves

def test_a_failing_host_analysis_keeps_the_devices_measurement(tmp_path, monkeypatch):
    """The device's samples and accuracy survive a bug in host analysis: the record is failed (so
    --resume runs the cell again) but holds what the device measured."""
    import tomllib

    from harness import runner

    def broken(plan):
        raise AttributeError("a bug in host analysis")

    monkeypatch.setattr(runner, "analyze", broken)
    target = LocalTarget()
    journal = Journal(tmp_path / "run.jsonl")
    jobs = jobs_from(tomllib.loads(SMALL))[:1]
    summary = Runner(target, target.cache, journal, "run", "small").run(jobs)
    assert (summary.ok, summary.failed) == (0, 1)
    (record,) = read_journal(journal.path)[0]
    assert record["status"] == "failed" and record["error"]["failure"] == "analysis-error"
    assert len(record["measurement"]["samples"]["step_ns"]) >= 1 and record["device"]["cpu_count"]
