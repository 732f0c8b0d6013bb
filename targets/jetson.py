"""Jetson over SSH: the SSH target plus the board's power rails as a PowerMeter.

The meter runs ``python -m targets.jetson_power`` on the board for the length of a run (jtop if
its service answers, else tegrastats, else the INA3221 sysfs nodes; at 20 Hz), stamping samples
with the board's CLOCK_MONOTONIC. The agent stamps regions with ``time.perf_counter_ns``; the
offset between the two clocks is measured on the device (both read in one ``clock`` message, a
few times) and recorded. The sampler is stopped only once it has sent a sample at or after the
run's last region, so the trace covers every window. Energy per window is computed on the host by
``harness.energy``.
Health: nvpmodel mode, whether the CPU clocks are pinned (as ``jetson_clocks`` does), governor
and thermal zones, before and after each job.
"""
import json
import logging
import queue
import threading
import time

from harness.energy import ClockOffset
from harness.stats import median
from harness.target import Trace

from .remote import SshTarget

log = logging.getLogger("odt_bench.jetson")
INTERVAL_MS = 50
COVER_S = 5.0      # how long stop() waits for a sample after the run's end
HEALTH_SCRIPT = (
    "echo nvpmodel: $(nvpmodel -q 2>/dev/null | head -n 1); "
    "cd /sys/devices/system/cpu/cpu0/cpufreq 2>/dev/null && "
    "echo governor: $(cat scaling_governor) && echo clocks: $(cat scaling_min_freq) $(cat scaling_max_freq); "
    "for z in /sys/devices/virtual/thermal/thermal_zone*; do "
    "echo thermal: $(cat $z/type 2>/dev/null) $(cat $z/temp 2>/dev/null); done")


class MeterError(RuntimeError):
    pass


def parse_health(text):
    out = {"nvpmodel": None, "governor": None, "clocks_pinned": None, "thermal_c": {}}
    for line in text.splitlines():
        key, _, value = line.partition(": ")
        value = value.strip()
        if key == "nvpmodel" and value:
            out["nvpmodel"] = value
        elif key == "governor" and value:
            out["governor"] = value
        elif key == "clocks" and len(value.split()) == 2:
            low, high = value.split()
            out["clocks_pinned"] = low == high
        elif key == "thermal" and len(value.split()) == 2:
            zone, milli = value.split()
            out["thermal_c"][zone] = int(milli) / 1000.0
    return out


class JetsonRailsMeter:
    """PowerMeter over SSH: the rail sampler on the board, started and stopped around a run."""

    def __init__(self, target):
        self.target = target
        self.proc = None
        self.lines = queue.Queue()
        self.header = None

    def start(self):
        t = self.target
        self.proc = t.ssh.popen([t.host.python, "-m", "targets.jetson_power", "--source", "auto",
                                 "--interval-ms", str(INTERVAL_MS)], cwd=t.code_dir,
                                env={"PYTHONPATH": t.code_dir})
        threading.Thread(target=self._read, daemon=True).start()
        try:
            first = self.lines.get(timeout=30)
        except queue.Empty:
            first = None
        header = json.loads(first) if first else {"type": "error", "message": "no output"}
        if header.get("type") != "meter":
            self._end()
            raise MeterError("the rail sampler on %s did not start: %s"
                             % (t.name, header.get("message") or self.proc.stderr.read()[-300:]))
        self.header = header

    def _read(self):
        for line in iter(self.proc.stdout.readline, ""):
            self.lines.put(line)
        self.lines.put(None)

    def _end(self):
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout=10)
        except Exception:
            self.proc.kill()

    def stop(self, until_ns=None) -> Trace:
        """The trace, the sampler stopped once it has sent a sample at or after ``until_ns`` (meter
        clock: the run's last region), so the trace covers the whole run: a run ends between two
        samples, and stopping the sampler at once would leave the window's end uncovered."""
        samples, ended = [], False
        deadline = time.monotonic() + COVER_S
        while until_ns is not None and not (samples and samples[-1][0] >= until_ns):
            try:
                line = self.lines.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                log.warning("the rail sampler on %s sent no sample after the run's end within %.0f s; "
                            "windows it does not cover get no energy", self.target.name, COVER_S)
                break
            if line is None:
                ended = True
                break
            _take(line, samples)
        self._end()
        while not ended:
            line = self.lines.get(timeout=10)
            ended = line is None
            if not ended:
                _take(line, samples)
        rails = {}
        for _, sample_rails in samples:
            for rail, watts in sample_rails.items():
                rails.setdefault(rail, []).append(watts)
        rails = {k: v for k, v in rails.items() if len(v) == len(samples)}
        return Trace(t_ns=[t for t, _ in samples], rails=rails, total_rail=self.header.get("total_rail"))


def _take(line, samples):
    """Append ``(t_ns, rails)`` of one sampler line to ``samples`` if it is a sample."""
    sample = json.loads(line)
    if "t" in sample:
        samples.append((sample["t"], sample["rails"]))


def device_clock_offset(session, samples=5):
    """Offset between the agent's timer and the device's CLOCK_MONOTONIC, measured on the device:
    meter time = device time - offset. Uncertainty: the spread over the samples."""
    diffs = []
    for _ in range(samples):
        _, device_t, _, monotonic = session.clock_sample()
        diffs.append(device_t - monotonic)
    return ClockOffset(int(median(diffs)), max(diffs) - min(diffs), len(diffs))


class JetsonTarget(SshTarget):
    """A Jetson over SSH; energy from its INA3221 power rails, nvpmodel and clocks checked."""

    tools = {"tegrastats": "part of JetPack (L4T); reinstall nvidia-l4t-tools",
             "nvpmodel": "part of JetPack (L4T); reinstall nvidia-l4t-nvpmodel"}

    def health(self):
        return parse_health(self.ssh.run(["sh", "-c", HEALTH_SCRIPT], timeout_s=30).stdout.decode())

    def judge(self, before, after):
        flags = []
        if before.get("clocks_pinned") is False or after.get("clocks_pinned") is False:
            flags.append("CPU clocks not pinned (run sudo jetson_clocks for repeatable timing)")
        if before.get("nvpmodel") != after.get("nvpmodel"):
            flags.append("nvpmodel mode changed during the job")
        return flags

    def execute(self, session, plan):
        meter = JetsonRailsMeter(self)
        state = {}

        def before_run(s):
            try:
                meter.start()
                state["offset"] = device_clock_offset(s)
            except MeterError as exc:
                log.warning("%s", exc)
                state["error"] = str(exc)

        def after_run(s, run):
            if "offset" in state:
                end = max((r["t"] for r in run.regions), default=None)
                run.trace = meter.stop(None if end is None else end - state["offset"].offset_ns)
                run.clock_offset = state["offset"]
                run.health["meter"] = meter.header
            else:
                run.health["meter_error"] = state.get("error")

        return session.execute(plan, before_run=before_run, after_run=after_run)
