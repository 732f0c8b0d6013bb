"""The Raspberry Pi and Jetson drivers against a real sshd on 127.0.0.1, running real Jobs through
the real agent on the other side (board tools are stand-ins replaying recorded outputs)."""
import json
import subprocess
import sys
import time

import pytest

from harness.cache import ArtifactCache
from harness.cli import main
from harness.journal import Journal, read_journal
from harness.plan import jobs_from
from harness.runner import Runner
from targets import jetson
from targets.jetson import JetsonRailsMeter, JetsonTarget
from targets.pi import RaspberryPiTarget
from targets.ssh import OpenSsh
from tests.delay_proxy import DelayProxy
from tests.helpers import stand_in_python
from tests.sshd import Sshd, require_sshd

SMALL = {"defaults": {"resolution": 32, "steps": 3, "warmup": 1},
         "cells": [{"model": "mbv2-w0.35", "method": "last-layer"}]}


def _target(cls, sshd, tmp_path, name="board", **extra):
    path = sshd.targets_file(tmp_path / "targets.toml", name=name, **extra)
    return cls.from_config(name, ArtifactCache(), str(path)), path


def _run(target, tmp_path, doc=SMALL):
    journal = Journal(tmp_path / ("run-%d.jsonl" % time.monotonic_ns()))
    Runner(target, target.cache, journal, "run", "small").run(jobs_from(doc))
    return read_journal(journal.path)[0]


def test_the_pi_driver_runs_jobs_remotely_and_sends_unchanged_content_once(sshd, tmp_path):
    doc = {"defaults": {"resolution": 32, "steps": 3, "warmup": 1},
           "cells": [{"model": "mbv2-w0.35", "method": ["last-layer", "bias-only"],
                      "data": ["synthetic", "mnist5k-transfer"]}]}
    target, path = _target(RaspberryPiTarget, sshd, tmp_path, name="pi-a")
    records = _run(target, tmp_path, doc)
    assert [r["status"] for r in records] == ["ok"] * 4
    record = records[0]
    assert record["target"] == "pi-a"
    assert record["device"]["code_dir"].startswith(target.host.workdir)  # the pushed bundle ran
    health = record["measurement"]["health"]
    assert health["before"]["temp_c"] == 47.2 and health["after"]["throttled"] == 0
    assert health["flags"] == []
    assert target.sent == {"code": 1, "objects": 2}  # dataset + checkpoint
    again = RaspberryPiTarget.from_config("pi-a", ArtifactCache(), str(path))
    assert [r["status"] for r in _run(again, tmp_path, doc)] == ["ok"] * 4
    assert again.sent == {"code": 0, "objects": 0}


def test_throttling_during_a_job_is_flagged_and_strict_rejects_it(sshd, tmp_path):
    target, _ = _target(RaspberryPiTarget, sshd, tmp_path, name="pi-b")
    sshd.throttle_queue.write_text("0x0\n0x50005\n")
    (record,) = _run(target, tmp_path)
    assert record["status"] == "ok"
    assert record["measurement"]["health"]["flags"] == ["under-voltage now", "throttled now"]
    strict, _ = _target(RaspberryPiTarget, sshd, tmp_path, name="pi-b", strict=True)
    sshd.throttle_queue.write_text("0x0\n0x50000\n")
    (record,) = _run(strict, tmp_path)
    assert record["status"] == "failed" and record["error"]["failure"] == "unhealthy"
    assert "under-voltage occurred during the job" in record["error"]["message"]
    sshd.throttle_queue.write_text("")


def test_remote_commands_quote_user_values(sshd, tmp_path):
    target, _ = _target(RaspberryPiTarget, sshd, tmp_path)
    tricky = "a b'c;d $(echo pwned) `x` \"q\""
    assert OpenSsh(target.host).check(["printf", "%s", tricky]) == tricky


def test_a_wrong_host_key_is_refused_with_a_clear_message(sshd, tmp_path, capsys):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    known = tmp_path / "known_hosts"
    known.write_text("[127.0.0.1]:%d %s\n" % (sshd.port, " ".join(
        (tmp_path / "other_key.pub").read_text().split()[:2])))
    path = sshd.targets_file(tmp_path / "t.toml", known_hosts=str(known))
    assert main(["run", "--target", "board", "--targets", str(path), "--model", "mbv2-w0.35",
                 "--method", "last-layer", "--results", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "host key of 127.0.0.1:%d is unknown or does not match" % sshd.port in err
    assert "ssh-keyscan" in err
    assert main(["doctor", "--target", "board", "--targets", str(path)]) == 1


def test_a_hanging_remote_job_times_out_and_leaves_nothing_running(sshd, tmp_path):
    target, _ = _target(RaspberryPiTarget, sshd, tmp_path, name="pi-hang")
    doc = {"defaults": {"resolution": 64, "steps": 10 ** 7, "warmup": 0, "timeout_s": 12},
           "cells": [{"model": "mbv2-w0.35", "method": "full"}]}
    (record,) = _run(target, tmp_path, doc)
    assert record["status"] == "failed" and record["error"]["failure"] == "timeout"
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = subprocess.run(["pgrep", "-f", target.host.workdir + "/objects"], capture_output=True)
        if left.returncode == 1:
            break
        time.sleep(0.5)
    assert left.returncode == 1, "remote agent still running: %s" % left.stdout


@pytest.mark.parametrize("fake_torch,text", [
    ('__version__ = "1.10.0"\n', "torch 1.10.0 is below the device floor 1.13"),
    ('raise ImportError("No module named torch")\n', "torch is not installed"),
])
def test_a_device_below_the_floor_is_refused_by_run_and_doctor(sshd, tmp_path, capsys, fake_torch, text):
    fake = tmp_path / "fake" / "torch"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(fake_torch)
    python = stand_in_python(tmp_path, 'PYTHONPATH="%s:$PYTHONPATH" exec %s "$@"' % (fake.parent, sys.executable))
    target, path = _target(RaspberryPiTarget, sshd, tmp_path, name="old", python=python)
    assert main(["run", "--target", "old", "--targets", str(path), "--model", "mbv2-w0.35",
                 "--method", "last-layer", "--results", str(tmp_path)]) == 1
    assert text in capsys.readouterr().err
    assert main(["doctor", "--target", "old", "--targets", str(path)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  floor" in out and text in out and "not ready: floor" in out


@pytest.mark.parametrize("after_s", [0.0, 1.0], ids=["while-the-agent-starts", "while-it-trains"])
def test_a_stopped_sshd_fails_the_running_cell_and_resume_completes_the_rest(tmp_path, after_s):
    require_sshd()  # its own server, which it stops
    (tmp_path / "server").mkdir()
    server = Sshd(tmp_path / "server")
    server.start()
    try:
        path = server.targets_file(tmp_path / "t.toml", name="flaky")
        plan = tmp_path / "p.toml"
        plan.write_text('[defaults]\nresolution = 64\nwarmup = 1\nmodel = "mbv2-w0.35"\n'
                        '[[cells]]\nmethod = "last-layer"\nsteps = 3\n'
                        '[[cells]]\nmethod = "bias-only"\nsteps = 600\n'
                        '[[cells]]\nmethod = "full"\nsteps = 3\n')
        results = tmp_path / "results"
        proc = subprocess.Popen([sys.executable, "-m", "harness.cli", "run", "--plan", str(plan),
                                 "--target", "flaky", "--targets", str(path), "--results", str(results)],
                                stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not list(results.rglob("*.jsonl")):
            time.sleep(0.2)
        agent = ["pgrep", "-f", "%s/objects" % (server.root / "work-flaky")]
        while time.monotonic() < deadline and subprocess.run(agent, capture_output=True).returncode:
            time.sleep(0.1)
        time.sleep(after_s)
        server.stop()  # mid-run: at once, the second cell's agent is still starting; after 1 s it is
        # usually training (on a loaded machine it may still be starting: both must read the same)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 1, err
        (journal,) = results.rglob("*.jsonl")
        records, _ = read_journal(journal)
        assert [r["status"] for r in records] == ["ok", "failed", "failed"]
        assert "lost the SSH connection to flaky" in records[1]["error"]["message"], records[1]["error"]
        assert "Connection refused" in records[2]["error"]["message"]
        server.start()
        assert main(["run", "--plan", str(plan), "--target", "flaky", "--targets", str(path),
                     "--results", str(results), "--resume", str(journal)]) == 0
        latest = {r["cell_id"]: r["status"] for r in read_journal(journal)[0]}
        assert set(latest.values()) == {"ok"} and len(latest) == 3
    finally:
        server.stop()


def test_step_times_come_from_the_device_not_the_link(sshd, tmp_path):
    direct, _ = _target(RaspberryPiTarget, sshd, tmp_path, name="fast")
    proxy = DelayProxy(sshd.port, one_way_s=0.15)
    try:
        slow, _ = _target(RaspberryPiTarget, sshd, tmp_path, name="slow", port=proxy.port)
        (tmp_path / "kh").write_text(sshd.known_hosts.read_text().replace(
            "]:%d " % sshd.port, "]:%d " % proxy.port))
        slow.host = slow.ssh.host = type(slow.host)(**dict(vars(slow.host), known_hosts=str(tmp_path / "kh")))
        doc = {"defaults": {"resolution": 64, "steps": 30, "warmup": 3},
               "cells": [{"model": "mbv2-w0.35", "method": "bp-last-k"}], "methods": {"bp-last-k": {"k": 6}}}
        walls, medians = {}, {}
        for name, target in (("direct", direct), ("delayed", slow)):
            target.deploy_code()
            started = time.monotonic()
            (record,) = _run(target, tmp_path, doc)
            walls[name] = time.monotonic() - started
            steps = sorted(record["measurement"]["samples"]["step_ns"])
            medians[name] = steps[len(steps) // 2]
        # at least the protocol's round trips (hello, load, run, and the health and deploy checks)
        assert walls["delayed"] - walls["direct"] >= 0.3 * 3, walls
        print("median step ns direct %d, delayed %d (%.1f%%); wall s %s" % (
            medians["direct"], medians["delayed"], 100.0 * (medians["delayed"] / medians["direct"] - 1), walls))
    finally:
        proxy.close()


def test_the_jetson_meter_stops_only_once_a_sample_covers_the_end_of_the_run(sshd, tmp_path, monkeypatch, caplog):
    # sshd runs on this machine, so the sampler's CLOCK_MONOTONIC is the test's time.monotonic_ns()
    target, _ = _target(JetsonTarget, sshd, tmp_path, kind="jetson", name="nano")
    target.deploy_code()
    meter = JetsonRailsMeter(target)
    meter.start()
    end = time.monotonic_ns() + 300 * 10 ** 6   # a run that ends 0.3 s from now: 6 samples later
    trace = meter.stop(end)
    assert trace.t_ns[-1] >= end and trace.t_ns == sorted(trace.t_ns)
    assert {len(v) for v in trace.rails.values()} == {len(trace.t_ns)} and "POM_5V_IN" in trace.rails
    # a sampler that never gets there is stopped after COVER_S, with what it sent and a warning
    monkeypatch.setattr(jetson, "COVER_S", 0.3)
    meter = JetsonRailsMeter(target)
    meter.start()
    trace = meter.stop(time.monotonic_ns() + 3600 * 10 ** 9)
    assert len(trace.t_ns) >= 2 and "sent no sample after the run's end" in caplog.text


def test_jetson_energy_from_replayed_rails_matches_the_integral(sshd, tmp_path):
    target, _ = _target(JetsonTarget, sshd, tmp_path, kind="jetson", name="nano")
    doc = {"defaults": {"resolution": 64, "steps": 40, "warmup": 2},
           "cells": [{"model": "mbv2-w0.35", "method": "full"}]}
    (record,) = _run(target, tmp_path, doc)
    assert record["status"] == "ok", record.get("error")
    m = record["measurement"]
    timed = {r["event"]: r["t"] for r in m["regions"] if r["name"] == "timed"}
    seconds = (timed["stop"] - timed["start"]) / 1e9
    trace = m["trace"]
    rails = trace["rails"]
    assert trace["total_rail"] == "POM_5V_IN" and len(trace["t_ns"]) >= 10 * seconds
    # independent integral: trapezoid over the recorded samples inside the window, with the
    # window's ends linearly interpolated (device times shifted by the recorded offset)
    offset = m["clock_offset"]["offset_ns"]
    start, stop = timed["start"] - offset, timed["stop"] - offset

    def joules(series):
        points = [(t, w) for t, w in zip(trace["t_ns"], series)]
        def at(x):
            for (t0, w0), (t1, w1) in zip(points, points[1:]):
                if t0 <= x <= t1:
                    return w0 + (w1 - w0) * (x - t0) / (t1 - t0)
            raise AssertionError("trace does not cover %d" % x)
        inner = [(start, at(start))] + [p for p in points if start < p[0] < stop] + [(stop, at(stop))]
        return sum((t1 - t0) / 1e9 * (w0 + w1) / 2 for (t0, w0), (t1, w1) in zip(inner, inner[1:]))

    total = m["figures"]["energy_j"]["value"]
    assert total == pytest.approx(joules(rails["POM_5V_IN"]), rel=0.01)
    assert m["figures"]["energy_rail_j.POM_5V_CPU"]["value"] == pytest.approx(joules(rails["POM_5V_CPU"]), rel=0.01)
    assert 0.5 * seconds < total < 10 * seconds  # watts of a Nano, recorded
    assert m["health"]["before"]["nvpmodel"] == "NV Power Mode: MAXN"
    assert abs(m["clock_offset"]["offset_ns"]) < 10 ** 9
