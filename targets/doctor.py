"""``odt-bench doctor``: is a device ready to run jobs? Each check says ok, warn or FAIL, and
what fixes it. The checks run as one shell script on the device (over SSH, or locally)."""
from dataclasses import dataclass
from typing import Optional

from harness.syschecks import GOVERNOR_FIX

MIN_FREE_MEMORY = 512 * 1024 ** 2
MIN_FREE_DISK = 1024 ** 3
SCRIPT = r'''
echo "python: $("$1" -c 'import sys; print(sys.version.split()[0])' 2>&1 | tail -n 1)"
cd "$2" && "$1" -m harness.floor 2>&1 | sed 's/^/floor: /'
echo "memory_kib: $(awk '/MemAvailable/ {print $2}' /proc/meminfo)"
mkdir -p "$3" && echo "disk_kib: $(df -Pk "$3" | awk 'NR==2 {print $4}')"
g=/sys/devices/system/cpu/cpu0/cpufreq
echo "governor: $(cat $g/scaling_governor 2>/dev/null)"
echo "clock_khz: $(cat $g/scaling_cur_freq 2>/dev/null) $(cat $g/scaling_max_freq 2>/dev/null)"
shift 3
for tool in "$@"; do echo "tool: $tool $(command -v "$tool" || echo MISSING)"; done
'''


@dataclass(frozen=True)
class Check:
    name: str
    status: str  # "ok" | "warn" | "FAIL"
    detail: str
    fix: Optional[str] = None

    def line(self):
        text = "  %-5s %-10s %s" % (self.status, self.name, self.detail.replace("\n", "\n" + " " * 19))
        return text + ("\n        fix: %s" % self.fix if self.fix else "")


def _values(output, key):
    prefix = key + ": "
    return [line[len(prefix):].strip() for line in output.splitlines() if line.startswith(prefix)]


def _first(output, key):
    found = _values(output, key)
    return found[0] if found else ""


def checks(output, tools, python_fix):
    """Checks from the script's output; ``tools`` maps a tool to the command that installs it."""
    out = [Check("python", "ok" if _first(output, "python")[:1].isdigit() else "FAIL",
                 _first(output, "python") or "no answer", None if _first(output, "python") else python_fix)]
    floor = _values(output, "floor") or ["could not run harness.floor"]
    ok = any(line.startswith("device stack OK") for line in floor)  # warnings may come first
    out.append(Check("floor", "ok" if ok else "FAIL", "\n".join(floor), None if ok else python_fix))
    mem = _first(output, "memory_kib")
    if mem.isdigit():
        free = int(mem) * 1024
        out.append(Check("memory", "ok" if free >= MIN_FREE_MEMORY else "warn",
                         "%.1f GiB available" % (free / 1024 ** 3),
                         None if free >= MIN_FREE_MEMORY else "close other programs; training needs memory"))
    disk = _first(output, "disk_kib")
    if disk.isdigit():
        free = int(disk) * 1024
        out.append(Check("disk", "ok" if free >= MIN_FREE_DISK else "warn",
                         "%.1f GiB free in the work dir" % (free / 1024 ** 3),
                         None if free >= MIN_FREE_DISK else "free space or set another workdir"))
    governor = _first(output, "governor")
    out.append(Check("governor", "ok" if governor == "performance" else "warn",
                     governor or "unreadable (no cpufreq)", None if governor == "performance" else GOVERNOR_FIX))
    clocks = _first(output, "clock_khz").split()
    if len(clocks) == 2:
        out.append(Check("clocks", "ok" if clocks[0] == clocks[1] else "warn",
                         "%s of %s kHz" % tuple(clocks), None if clocks[0] == clocks[1] else GOVERNOR_FIX))
    for line in _values(output, "tool"):
        tool, where = line.split(" ", 1)
        missing = where == "MISSING"
        out.append(Check(tool, "FAIL" if missing else "ok", "not found" if missing else where,
                         tools.get(tool) if missing else None))
    return out


def failed(results):
    return any(c.status == "FAIL" for c in results)
