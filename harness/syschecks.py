"""System checks the device runs before each job, reported as advice with its results (device side).

Each check is a small class with ``available()`` and ``check()`` (pyperf's habit). They never stop
a run — a busy or hot device is the user's call — but the journal and the report say so. Paths are
read under ``root`` so tests can give a fake ``/sys`` and ``/proc``.
"""
import glob
import os
import time

OK, ADVICE, UNAVAILABLE = "ok", "advice", "unavailable"
GOVERNOR_FIX = "echo performance | sudo tee /sys/devices/system/cpu/cpu*/cpufreq/scaling_governor"
BUSY_LIMIT = 0.10
HOT_C = 70.0


class SystemCheck:
    name = ""

    def __init__(self, root="/"):
        self.root = root

    def path(self, *parts):
        return os.path.join(self.root, *parts)

    def available(self):
        raise NotImplementedError

    def check(self):
        """``(status, value, advice)``."""
        raise NotImplementedError

    def run(self):
        if not self.available():
            return {"name": self.name, "status": UNAVAILABLE, "value": None, "advice": None}
        status, value, advice = self.check()
        return {"name": self.name, "status": status, "value": value, "advice": advice}


def _read(path):
    with open(path) as f:
        return f.read().strip()


class Governor(SystemCheck):
    """Frequency scaling makes step times depend on the load just before them."""

    name = "governor"

    def files(self):
        return sorted(glob.glob(self.path("sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")))

    def available(self):
        return bool(self.files())

    def check(self):
        found = sorted({_read(f) for f in self.files()})
        value = ", ".join(found)
        if found == ["performance"]:
            return OK, value, None
        return ADVICE, value, "set the 'performance' governor for stable clocks: " + GOVERNOR_FIX


def _cpu_times(stat_text):
    """(busy, total) jiffies from the aggregate ``cpu`` line of /proc/stat."""
    fields = [int(v) for v in stat_text.splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


class OtherLoad(SystemCheck):
    """CPU time used by other processes while this one is idle, over a short interval."""

    name = "other-load"

    def __init__(self, root="/", interval_s=0.25, sleep=time.sleep):
        super().__init__(root)
        self.interval_s = interval_s
        self.sleep = sleep

    def available(self):
        return os.path.isfile(self.path("proc/stat"))

    def check(self):
        busy0, total0 = _cpu_times(_read(self.path("proc/stat")))
        self.sleep(self.interval_s)
        busy1, total1 = _cpu_times(_read(self.path("proc/stat")))
        if total1 <= total0:
            return UNAVAILABLE, "no CPU time elapsed in /proc/stat", None
        busy = (busy1 - busy0) / (total1 - total0)
        value = "%.0f%% of all CPUs busy while the agent was idle" % (100 * busy)
        if busy <= BUSY_LIMIT:
            return OK, value, None
        return ADVICE, value, "other processes compete for the CPUs: stop them, or pin them away (taskset)"


class Thermal(SystemCheck):
    """A hot SoC throttles; its steps get slower as the run goes on."""

    name = "thermal"

    def zones(self):
        return sorted(glob.glob(self.path("sys/class/thermal/thermal_zone*")))

    def readings(self):
        out = []
        for zone in self.zones():
            try:
                out.append((int(_read(os.path.join(zone, "temp"))) / 1000.0,
                            _read(os.path.join(zone, "type")) if os.path.isfile(os.path.join(zone, "type"))
                            else os.path.basename(zone)))
            except (OSError, ValueError):
                continue
        return out

    def available(self):
        return bool(self.readings())

    def check(self):
        celsius, zone = max(self.readings())
        value = "hottest %.1f C (%s)" % (celsius, zone)
        if celsius < HOT_C:
            return OK, value, None
        return ADVICE, value, "the device is hot enough to throttle: let it cool, add a heatsink or fan"


CHECKS = (Governor, OtherLoad, Thermal)


def run_checks(root="/"):
    """Every check's ``{"name", "status", "value", "advice"}``; a check that breaks is unavailable."""
    results = []
    for cls in CHECKS:
        try:
            results.append(cls(root).run())
        except (OSError, ValueError, IndexError) as exc:
            results.append({"name": cls.name, "status": UNAVAILABLE, "value": str(exc), "advice": None})
    return results
