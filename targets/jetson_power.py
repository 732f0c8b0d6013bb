"""Device-side sampler of a Jetson's power rails: run ON THE BOARD, JSON lines on stdout.

    python -m targets.jetson_power --source auto|jtop|tegrastats|sysfs --interval-ms 100 [--sysfs-root /sys]

First line: ``{"type": "meter", "source": ..., "clock": "CLOCK_MONOTONIC", "total_rail": "POM_5V_IN"
| "VDD_IN" | null, "rails": [...], "interval_ms": ...}``; then one line per sample:
``{"type": "sample", "t": <time.monotonic_ns()>, "rails": {"POM_5V_IN": watts, ...}, "source": ...}``.
Every line is flushed. It stops cleanly (exit 0), killing its tegrastats child, on SIGTERM, SIGINT,
SIGHUP or when its stdin closes (watched in a thread; ``--ignore-stdin`` turns that off). If no
source works it prints ``{"type": "error", "message": ...}`` naming what was tried and exits 2; a bad
argument (an interval over 100 ms, i.e. under 10 Hz) is an error line and exit 2 as well; a source
that fails while sampling is an error line and exit 1.

Clock: samples are stamped with ``time.monotonic_ns()``. On Linux both ``time.monotonic_ns()`` and
``time.perf_counter_ns()`` read CLOCK_MONOTONIC, the clock the device agent stamps its regions with
(``perf_counter_ns``), so sample times and region times are on one clock and need no offset
(``harness.energy.ClockOffset.zero``). A tegrastats sample is stamped when its line arrives, a few
ms at most after the tool read its sensors; a sysfs sample at the middle of reading its rails.

Sources, tried in this order by ``auto``:

- ``jtop``: the jetson-stats client (``from jtop import jtop``), if it imports and its service
  answers; rails from its ``power`` dict (jetson-stats 4: ``power["rail"][name]["power"]`` in mW;
  3.x: ``(total, {name: {"cur": mW}})``). Not testable without a board: written defensively, and
  jtop's service may update more slowly than asked.
- ``tegrastats --interval N`` if on PATH: each line parsed by ``parse_tegrastats``.
- INA3221 sysfs nodes under ``--sysfs-root``: Nano style
  ``bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_<k>`` with ``in_power<k>_input`` (mW), and the
  newer hwmon style ``bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in<k>_label`` with ``curr<k>_input``
  (mA) and ``in<k>_input`` (mV).

Standard library only; runs on Python 3.8 (the device side's syntax rules: no f-strings).
"""
import argparse
import collections
import glob
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from typing import Callable, Dict, Iterator, List, Optional, Tuple

CLOCK = "CLOCK_MONOTONIC"
TOTAL_RAILS = ("POM_5V_IN", "VDD_IN")
MAX_INTERVAL_MS = 100          # 10 Hz at least
SOURCES = ("jtop", "tegrastats", "sysfs")

# "NAME cur/avg" with optional mW units, e.g. "POM_5V_IN 933/933" or "VDD_IN 5026mW/5026mW".
# Both numbers must end the token, so "RAM 1462/3964MB" and "IRAM 0/252kB" do not match.
_RAIL = re.compile(r"(?<![\w@\[%])([A-Za-z][A-Za-z0-9_]*) (\d+(?:\.\d+)?)(?:mW)?/(\d+(?:\.\d+)?)(?:mW)?(?=\s|$)")
_NOT_RAILS = ("RAM", "SWAP", "IRAM", "LFB")


class SourceUnavailable(Exception):
    """A power source cannot be used here; the message says why."""


class SourceFailed(Exception):
    """A power source stopped working while sampling."""


def parse_tegrastats(line):
    # type: (str) -> Dict[str, float]
    """Watts per rail from one tegrastats line (the current value of each ``NAME cur/avg`` pair, mW).

    Handles the Nano format (``POM_5V_IN 933/933 POM_5V_GPU 0/0``), Xavier/Orin (``VDD_IN
    5026mW/5026mW VDD_CPU_GPU_CV 1126mW/1126mW``) and AGX Xavier (``GPU 0/0 CPU 248/248 SOC 865/865``).
    A line without rails gives an empty dict.
    """
    rails = {}  # type: Dict[str, float]
    for name, current, _average in _RAIL.findall(line):
        if name.upper() not in _NOT_RAILS:
            rails[name] = float(current) / 1000.0
    return rails


def total_rail(rails):
    # type: (Dict[str, float]) -> Optional[str]
    """The rail that is the board's total input (POM_5V_IN or VDD_IN), or None."""
    for name in TOTAL_RAILS:
        if name in rails:
            return name
    return None


# --- sources: each yields (t_ns, {rail: watts}) until stop is set ------------------------------


class TegrastatsSource(object):
    name = "tegrastats"

    def __init__(self, interval_ms, stop, executable="tegrastats"):
        # type: (int, threading.Event, str) -> None
        self.interval_ms = interval_ms
        self.stop = stop
        self.executable = executable
        self.proc = None  # type: Optional[subprocess.Popen]
        self.lines = queue.Queue()  # type: queue.Queue
        self.other = collections.deque(maxlen=5)  # last lines without rails, for error messages

    def open(self):
        # type: () -> None
        path = shutil.which(self.executable)
        if path is None:
            raise SourceUnavailable("%s is not on PATH" % self.executable)
        try:
            self.proc = subprocess.Popen([path, "--interval", str(self.interval_ms)], stdin=subprocess.DEVNULL,
                                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                         universal_newlines=True, bufsize=1)
        except OSError as e:
            raise SourceUnavailable("%s could not start: %s" % (path, e))
        reader = threading.Thread(target=self._read, args=(self.proc.stdout,), name="tegrastats-reader")
        reader.daemon = True
        reader.start()

    def _read(self, stream):
        for line in stream:
            self.lines.put((time.monotonic_ns(), line))
        self.lines.put((time.monotonic_ns(), None))

    def samples(self, first_timeout_s):
        # type: (float) -> Iterator[Tuple[int, Dict[str, float]]]
        timeout = first_timeout_s
        while not self.stop.is_set():
            deadline = time.monotonic() + timeout
            rails = {}  # type: Dict[str, float]
            while not rails:
                if self.stop.is_set():
                    return
                left = deadline - time.monotonic()
                if left <= 0:
                    raise SourceFailed("tegrastats printed no power rails for %.1f s" % timeout)
                try:
                    t, line = self.lines.get(timeout=min(left, 0.05))
                except queue.Empty:
                    continue
                if line is None:
                    raise SourceFailed("tegrastats exited (code %s): %s"
                                       % (self.proc.wait(), " | ".join(self.other) or "no message"))
                rails = parse_tegrastats(line)
                if not rails and line.strip():
                    self.other.append(line.strip()[:200])
            yield t, rails
            timeout = max(2.0, 20 * self.interval_ms / 1000.0)

    def close(self):
        # type: () -> None
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=2)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def _read_number(path):
    # type: (str) -> float
    with open(path) as f:
        return float(f.read().strip())


def _read_text(path):
    # type: (str) -> str
    with open(path) as f:
        return f.read().strip()


def sysfs_rails(root):
    # type: (str) -> List[Tuple[str, Callable[[], float]]]
    """The INA3221 rails under a sysfs ``root``: (name, function reading its watts), both layouts."""
    found = []  # type: List[Tuple[str, Callable[[], float]]]
    nano = os.path.join(root, "bus", "i2c", "drivers", "ina3221x", "*", "iio:device*", "rail_name_*")
    for label_path in sorted(glob.glob(nano)):
        k = label_path.rsplit("_", 1)[1]
        power = os.path.join(os.path.dirname(label_path), "in_power%s_input" % k)
        if os.path.exists(power):
            found.append((_read_text(label_path), _milliwatts_reader(power)))
    hwmon = os.path.join(root, "bus", "i2c", "drivers", "ina3221", "*", "hwmon", "hwmon*", "in*_label")
    for label_path in sorted(glob.glob(hwmon)):
        match = re.match(r"in(\d+)_label$", os.path.basename(label_path))
        if not match:
            continue
        k = match.group(1)
        directory = os.path.dirname(label_path)
        current, voltage = (os.path.join(directory, "curr%s_input" % k), os.path.join(directory, "in%s_input" % k))
        if os.path.exists(current) and os.path.exists(voltage):
            found.append((_read_text(label_path), _hwmon_reader(current, voltage)))
    names = {}  # type: Dict[str, int]
    unique = []
    for name, read in found:
        names[name] = names.get(name, 0) + 1
        unique.append((name if names[name] == 1 else "%s#%d" % (name, names[name]), read))
    return unique


def _milliwatts_reader(path):
    return lambda: _read_number(path) / 1000.0


def _hwmon_reader(current_path, voltage_path):
    return lambda: _read_number(current_path) * _read_number(voltage_path) / 1e6


class SysfsSource(object):
    name = "sysfs"

    def __init__(self, interval_ms, stop, root="/sys"):
        # type: (int, threading.Event, str) -> None
        self.interval_ms = interval_ms
        self.stop = stop
        self.root = root
        self.rails = []  # type: List[Tuple[str, Callable[[], float]]]

    def open(self):
        # type: () -> None
        try:
            self.rails = sysfs_rails(self.root)
        except (OSError, ValueError) as e:
            raise SourceUnavailable("INA3221 nodes under %s unreadable: %s" % (self.root, e))
        if not self.rails:
            raise SourceUnavailable(
                "no INA3221 rails under %s (bus/i2c/drivers/ina3221x/*/iio:device*/rail_name_* or "
                "bus/i2c/drivers/ina3221/*/hwmon/hwmon*/in*_label)" % self.root)

    def read(self):
        # type: () -> Tuple[int, Dict[str, float]]
        before = time.monotonic_ns()
        try:
            rails = dict((name, read()) for name, read in self.rails)
        except (OSError, ValueError) as e:
            raise SourceFailed("reading INA3221 rails under %s failed: %s" % (self.root, e))
        return (before + time.monotonic_ns()) // 2, rails

    def samples(self, first_timeout_s):
        # type: (float) -> Iterator[Tuple[int, Dict[str, float]]]
        return _polled(self.read, self.interval_ms, self.stop)

    def close(self):
        # type: () -> None
        pass


def _polled(read, interval_ms, stop):
    """Call ``read`` every ``interval_ms`` on a fixed schedule (no drift) until ``stop`` is set."""
    period = interval_ms * 1000000
    next_t = time.monotonic_ns()
    while not stop.is_set():
        yield read()
        next_t += period
        now = time.monotonic_ns()
        if next_t < now:              # fell behind: skip the missed slots rather than burst
            next_t = now
        if stop.wait((next_t - now) / 1e9):
            return


class JtopSource(object):
    name = "jtop"

    def __init__(self, interval_ms, stop):
        # type: (int, threading.Event) -> None
        self.interval_ms = interval_ms
        self.stop = stop
        self.jetson = None

    def open(self):
        # type: () -> None
        try:
            from jtop import jtop  # type: ignore
        except Exception as e:  # an ImportError, or a broken install
            raise SourceUnavailable("jtop does not import: %s" % e)
        try:
            self.jetson = jtop(interval=self.interval_ms / 1000.0)
            self.jetson.start()
            if not self.jetson.ok():
                raise SourceUnavailable("jtop service does not answer")
            if not self.read()[1]:
                raise SourceUnavailable("jtop reports no power rails")
        except SourceUnavailable:
            self.close()
            raise
        except Exception as e:  # jtop raises its own JtopException when the service is down
            self.close()
            raise SourceUnavailable("jtop service does not answer: %s" % e)

    def read(self):
        # type: () -> Tuple[int, Dict[str, float]]
        t = time.monotonic_ns()
        try:
            return t, _jtop_rails(self.jetson.power)
        except Exception as e:
            raise SourceFailed("reading jtop power failed: %s" % e)

    def samples(self, first_timeout_s):
        # type: (float) -> Iterator[Tuple[int, Dict[str, float]]]
        while not self.stop.is_set():
            try:
                ok = self.jetson.ok()   # blocks until jtop's next update
            except Exception as e:
                raise SourceFailed("jtop stopped: %s" % e)
            if not ok:
                raise SourceFailed("jtop service stopped answering")
            yield self.read()

    def close(self):
        # type: () -> None
        if self.jetson is not None:
            try:
                self.jetson.close()
            except Exception:  # closing a half-open client: nothing more to do
                pass
            self.jetson = None


def _jtop_rails(power):
    """Watts per rail from jtop's ``power``: v4 ``{"rail": {name: {"power": mW}}}``, v3 ``(tot, rails)``."""
    if isinstance(power, dict) and isinstance(power.get("rail"), dict):
        return dict((name, float(v["power"]) / 1000.0) for name, v in power["rail"].items()
                    if isinstance(v, dict) and "power" in v and v.get("online", True))
    if isinstance(power, (tuple, list)) and len(power) == 2 and isinstance(power[1], dict):
        return dict((name, float(v["cur"]) / 1000.0) for name, v in power[1].items()
                    if isinstance(v, dict) and "cur" in v)
    return {}


# --- the sampler ------------------------------------------------------------------------------


def _emit(obj):
    sys.stdout.write(json.dumps(obj, sort_keys=True, separators=(",", ":")) + "\n")
    sys.stdout.flush()


def _watch_stdin(stop):
    """Set ``stop`` when stdin reaches end of file (the host closed its end)."""
    def run():
        try:
            fd = sys.stdin.fileno()
            while os.read(fd, 4096):
                pass
        except (OSError, ValueError):
            pass
        stop.set()
    watcher = threading.Thread(target=run, name="stdin-watcher")
    watcher.daemon = True
    watcher.start()


def _make_source(name, args, stop):
    if name == "jtop":
        return JtopSource(args.interval_ms, stop)
    if name == "tegrastats":
        return TegrastatsSource(args.interval_ms, stop)
    return SysfsSource(args.interval_ms, stop, args.sysfs_root)


def _open_first(names, args, stop):
    """The first source that opens and gives a sample with rails: (source, its samples, the first
    sample, what was tried); source None if none works, or if ``stop`` was set while starting one."""
    tried = []
    first_timeout_s = max(3.0, 10 * args.interval_ms / 1000.0)
    for name in names:
        source = _make_source(name, args, stop)
        try:
            source.open()
            samples = iter(source.samples(first_timeout_s))
            first = next(samples, None)
            if first is None:
                source.close()
                return None, None, None, tried        # stopped while starting
            if not first[1]:
                raise SourceFailed("no power rails")
            return source, samples, first, tried
        except (SourceUnavailable, SourceFailed) as e:
            source.close()
            tried.append("%s: %s" % (name, e))
    return None, None, None, tried


def parse_args(argv):
    parser = argparse.ArgumentParser(prog="python -m targets.jetson_power", description=__doc__.split("\n")[0])
    parser.add_argument("--source", choices=("auto",) + SOURCES, default="auto")
    parser.add_argument("--interval-ms", type=int, default=MAX_INTERVAL_MS,
                        help="sampling interval in ms, 1..%d (at least 10 Hz)" % MAX_INTERVAL_MS)
    parser.add_argument("--sysfs-root", default="/sys", help="where sysfs is mounted (for tests)")
    parser.add_argument("--ignore-stdin", action="store_true", help="do not stop when stdin closes")
    return parser.parse_args(argv)


def main(argv=None):
    # type: (Optional[List[str]]) -> int
    args = parse_args(argv)
    if not 1 <= args.interval_ms <= MAX_INTERVAL_MS:
        message = ("--interval-ms %d refused: must be 1..%d ms (at least 10 samples per second)"
                   % (args.interval_ms, MAX_INTERVAL_MS))
        _emit({"type": "error", "message": message})
        sys.stderr.write("jetson_power: %s\n" % message)
        return 2
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, lambda *_: stop.set())
    if not args.ignore_stdin:
        _watch_stdin(stop)

    names = SOURCES if args.source == "auto" else (args.source,)
    source, samples, first, tried = _open_first(names, args, stop)
    if source is None:
        if len(tried) < len(names):       # stopped while a source was starting: nothing to report
            return 0
        message = "no power source works; tried %s" % "; ".join(tried)
        _emit({"type": "error", "message": message})
        sys.stderr.write("jetson_power: %s\n" % message)
        return 2
    code = 0
    try:
        _emit({"type": "meter", "source": source.name, "clock": CLOCK, "total_rail": total_rail(first[1]),
               "rails": sorted(first[1]), "interval_ms": args.interval_ms})
        sample = first
        while sample is not None:
            _emit({"type": "sample", "t": sample[0], "rails": sample[1], "source": source.name})
            sample = next(samples, None)
    except SourceFailed as e:
        _emit({"type": "error", "message": "%s failed while sampling: %s" % (source.name, e)})
        code = 1
    except BrokenPipeError:      # the reader went away: nothing left to tell it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        code = 0
    finally:
        source.close()
    return code


if __name__ == "__main__":
    sys.exit(main())
