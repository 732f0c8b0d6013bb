"""The Jetson rail sampler (targets.jetson_power): its parsers, and the real process against a stand-in
tegrastats that replays recorded lines, and against fake INA3221 sysfs trees."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from targets.jetson_power import parse_tegrastats, sysfs_rails, total_rail

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(__file__).resolve().parent / "data"
STANDINS = DATA / "standins"
NANO_LINES = (DATA / "tegrastats_nano.txt").read_text().splitlines()
ORIN_LINES = (DATA / "tegrastats_orin.txt").read_text().splitlines()
XAVIER_LINE = ("RAM 3103/31920MB (lfb 6363x4MB) SWAP 0/15960MB (cached 0MB) CPU [1%@1190,0%@1190,0%@1190,"
               "0%@1190,off,off,off,off] EMC_FREQ 0%@665 GR3D_FREQ 0%@318 APE 150 MTS fg 0% bg 0% AO@33C "
               "GPU@33.5C Tdiode@35.25C PMIC@100C AUX@32.5C CPU@34.5C thermal@33.5C Tboard@34C "
               "GPU 0/0 CPU 248/248 SOC 865/865 CV 0/0 VDDRQ 165/165 SYS5V 2424/2424")


# --- parsers ----------------------------------------------------------------------------------


def test_parse_nano_line():
    line = ("RAM 1462/3964MB (lfb 384x4MB) SWAP 0/1982MB (cached 0MB) CPU [9%@1479,4%@1479,5%@1479,3%@1479] "
            "EMC_FREQ 0% GR3D_FREQ 0% PLL@25C CPU@28C PMIC@100C GPU@27.5C AO@34C thermal@27.75C "
            "POM_5V_IN 933/900 POM_5V_GPU 0/0 POM_5V_CPU 84/80")
    rails = parse_tegrastats(line)
    assert rails == {"POM_5V_IN": 0.933, "POM_5V_GPU": 0.0, "POM_5V_CPU": 0.084}   # current, not average
    assert total_rail(rails) == "POM_5V_IN"


def test_parse_orin_line():
    rails = parse_tegrastats(ORIN_LINES[0])
    assert rails == {"VDD_IN": 5.026, "VDD_CPU_GPU_CV": 1.126, "VDD_SOC": 1.446}
    assert total_rail(rails) == "VDD_IN"


def test_parse_agx_xavier_line():
    rails = parse_tegrastats(XAVIER_LINE)
    assert rails == {"GPU": 0.0, "CPU": 0.248, "SOC": 0.865, "CV": 0.0, "VDDRQ": 0.165, "SYS5V": 2.424}
    assert total_rail(rails) is None


def test_every_recorded_line_parses_to_three_rails():
    for line in NANO_LINES:
        assert set(parse_tegrastats(line)) == {"POM_5V_IN", "POM_5V_GPU", "POM_5V_CPU"}, line
    for line in ORIN_LINES:
        assert set(parse_tegrastats(line)) == {"VDD_IN", "VDD_CPU_GPU_CV", "VDD_SOC"}, line
    assert parse_tegrastats("RAM 1462/3964MB (lfb 384x4MB) SWAP 0/1982MB IRAM 0/252kB") == {}


# --- fake sysfs trees -------------------------------------------------------------------------


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def nano_sysfs(root):
    """A Jetson Nano's INA3221 (ina3221x iio driver): rail names and power in mW."""
    dev = root / "bus/i2c/drivers/ina3221x/6-0040/iio:device0"
    for k, (name, mw) in enumerate([("POM_5V_IN", 2150), ("POM_5V_GPU", 412), ("POM_5V_CPU", 845)]):
        write(dev / ("rail_name_%d" % k), name)
        write(dev / ("in_power%d_input" % k), str(mw))
        write(dev / ("in_current%d_input" % k), "0")
    return {"POM_5V_IN": 2.15, "POM_5V_GPU": 0.412, "POM_5V_CPU": 0.845}


def hwmon_sysfs(root):
    """An Orin's INA3221 (hwmon driver): labels, current in mA, bus voltage in mV."""
    dev = root / "bus/i2c/drivers/ina3221/1-0040/hwmon/hwmon3"
    for k, (name, ma, mv) in enumerate([("VDD_IN", 1200, 5000), ("VDD_CPU_GPU_CV", 300, 5000),
                                        ("VDD_SOC", 250, 4800)], start=1):
        write(dev / ("in%d_label" % k), name)
        write(dev / ("curr%d_input" % k), str(ma))
        write(dev / ("in%d_input" % k), str(mv))
    write(dev / "in7_label", "sum of shunt voltages")       # no current: not a rail
    write(dev / "in7_input", "24")
    return {"VDD_IN": 6.0, "VDD_CPU_GPU_CV": 1.5, "VDD_SOC": 1.2}


@pytest.mark.parametrize("build", [nano_sysfs, hwmon_sysfs])
def test_sysfs_rails_in_both_layouts(tmp_path, build):
    expected = build(tmp_path)
    rails = {name: read() for name, read in sysfs_rails(str(tmp_path))}
    assert rails == pytest.approx(expected)


# --- the sampler as a real process ------------------------------------------------------------


@pytest.fixture
def sampler(tmp_path):
    """Start ``python -m targets.jetson_power ARGS`` with PATH = ``path_dirs`` + an empty directory."""
    started = []
    empty = tmp_path / "empty-bin"
    empty.mkdir()

    def start(*args, path_dirs=(), env=None):
        environ = dict(os.environ, PATH=os.pathsep.join([str(d) for d in path_dirs] + [str(empty), "/usr/bin", "/bin"]))
        environ.update(env or {})
        proc = subprocess.Popen([sys.executable, "-m", "targets.jetson_power", *args], cwd=ROOT, env=environ,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def children(pid):
    """Process ids whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path("/proc/%s/stat" % entry).read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def wait_for_children(pid, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = children(pid)
        if found:
            return found
        time.sleep(0.02)
    return []


def alive(pid):
    try:
        state = Path("/proc/%d/stat" % pid).read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def run_until(proc, lines_wanted, stop=signal.SIGTERM, timeout_s=30.0):
    """Signal ``proc`` once it has printed ``lines_wanted`` lines (or after ``timeout_s``, or when it
    exits): its lines as JSON and its stderr. Waiting for lines, not for a fixed time, keeps the
    tests right on a loaded machine, where the sampler may take seconds to start."""
    got = []
    reader = threading.Thread(target=lambda: got.extend(proc.stdout), daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    while len(got) < lines_wanted and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    proc.send_signal(stop)
    proc.wait(timeout=10)
    reader.join(timeout=10)
    return [json.loads(line) for line in got], proc.stderr.read()


def check_samples(lines, source, before_ns, after_ns):
    header, samples = lines[0], lines[1:]
    assert header["type"] == "meter" and header["source"] == source and header["clock"] == "CLOCK_MONOTONIC"
    assert all(s["source"] == source and s["type"] == "sample" for s in samples)
    t = [s["t"] for s in samples]
    assert all(b > a for a, b in zip(t, t[1:])), "sample times not strictly increasing"
    assert before_ns < t[0] and t[-1] < after_ns, "sample times are not this machine's CLOCK_MONOTONIC"
    rate = (len(t) - 1) / ((t[-1] - t[0]) / 1e9)
    assert rate >= 10, "%.1f samples/s" % rate
    return header, samples


def test_tegrastats_source_replays_the_recorded_rails(sampler):
    before = time.monotonic_ns()
    proc = sampler("--source", "auto", "--interval-ms", "50", path_dirs=[STANDINS])
    tegrastats = wait_for_children(proc.pid)
    lines, err = run_until(proc, 16)
    after = time.monotonic_ns()
    assert proc.returncode == 0, err
    header, samples = check_samples(lines, "tegrastats", before, after)
    assert header["total_rail"] == "POM_5V_IN" and header["interval_ms"] == 50
    assert len(samples) >= 15, "%d samples" % len(samples)
    for i, sample in enumerate(samples):             # every recorded line, in order, none dropped
        assert sample["rails"] == parse_tegrastats(NANO_LINES[i % len(NANO_LINES)]), i
    assert len(tegrastats) == 1 and not alive(tegrastats[0]), "tegrastats child left running"


def test_tegrastats_source_on_orin_names_vdd_in(sampler):
    proc = sampler("--source", "tegrastats", "--interval-ms", "20", path_dirs=[STANDINS],
                   env={"TEGRASTATS_REPLAY": str(DATA / "tegrastats_orin.txt")})
    lines, err = run_until(proc, 2, stop=signal.SIGINT)
    assert proc.returncode == 0, err
    assert lines[0]["total_rail"] == "VDD_IN"
    assert lines[1]["rails"] == {"VDD_IN": 5.026, "VDD_CPU_GPU_CV": 1.126, "VDD_SOC": 1.446}


@pytest.mark.parametrize("build, total", [(nano_sysfs, "POM_5V_IN"), (hwmon_sysfs, "VDD_IN")])
def test_sysfs_source(sampler, tmp_path, build, total):
    expected = build(tmp_path / "sys")
    before = time.monotonic_ns()
    proc = sampler("--source", "sysfs", "--sysfs-root", str(tmp_path / "sys"), "--interval-ms", "20")
    lines, err = run_until(proc, 11)
    after = time.monotonic_ns()
    assert proc.returncode == 0, err
    header, samples = check_samples(lines, "sysfs", before, after)
    assert header["total_rail"] == total
    assert len(samples) >= 10
    assert all(s["rails"] == pytest.approx(expected) for s in samples)


def test_auto_falls_back_to_sysfs_when_tegrastats_fails(sampler, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    write(broken / "tegrastats", "#!/bin/sh\necho 'tegrastats: not permitted' >&2\nexit 3")
    (broken / "tegrastats").chmod(0o755)
    nano_sysfs(tmp_path / "sys")
    proc = sampler("--sysfs-root", str(tmp_path / "sys"), "--interval-ms", "20", path_dirs=[broken])
    lines, err = run_until(proc, 1)
    assert proc.returncode == 0, err
    assert lines[0]["source"] == "sysfs"


def test_interval_over_100_ms_is_refused(sampler):
    proc = sampler("--interval-ms", "500", path_dirs=[STANDINS])
    out, err = proc.communicate(timeout=10)
    assert proc.returncode == 2
    error = json.loads(out.splitlines()[0])
    assert error["type"] == "error" and "--interval-ms 500" in error["message"] and "10 samples" in error["message"]


def test_no_source_is_an_error_line_and_exit_2(sampler, tmp_path):
    proc = sampler("--source", "auto", "--sysfs-root", str(tmp_path))
    out, err = proc.communicate(timeout=20)
    assert proc.returncode == 2, err
    lines = [json.loads(line) for line in out.splitlines()]
    assert len(lines) == 1 and lines[0]["type"] == "error"
    message = lines[0]["message"]
    assert "jtop:" in message and "tegrastats: tegrastats is not on PATH" in message
    assert "sysfs: no INA3221 rails under %s" % tmp_path in message


def test_a_named_source_that_fails_is_an_error(sampler, tmp_path):
    proc = sampler("--source", "sysfs", "--sysfs-root", str(tmp_path), path_dirs=[STANDINS])
    out, _ = proc.communicate(timeout=10)
    assert proc.returncode == 2
    assert "no INA3221 rails" in json.loads(out)["message"] and "tegrastats" not in json.loads(out)["message"]


def test_sampler_stops_when_stdin_closes(sampler):
    proc = sampler("--interval-ms", "20", path_dirs=[STANDINS])
    header = json.loads(proc.stdout.readline())
    assert header["type"] == "meter"
    for _ in range(3):
        assert json.loads(proc.stdout.readline())["rails"]
    tegrastats = children(proc.pid)
    proc.stdin.close()
    assert proc.wait(timeout=5) == 0
    proc.stdout.read()
    assert tegrastats and not any(alive(pid) for pid in tegrastats)
