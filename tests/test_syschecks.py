"""System checks over a fake /sys and /proc: each says ok, advice or unavailable."""
from harness import syschecks


def _write(root, rel, text):
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def _by_name(results):
    return {r["name"]: r for r in results}


def test_nothing_readable_means_unavailable_never_a_guess(tmp_path):
    results = _by_name(syschecks.run_checks(str(tmp_path)))
    assert {r["status"] for r in results.values()} == {"unavailable"}


def test_governor_advises_performance(tmp_path):
    for cpu, gov in ((0, "ondemand"), (1, "performance")):
        _write(tmp_path, "sys/devices/system/cpu/cpu%d/cpufreq/scaling_governor" % cpu, gov + "\n")
    result = syschecks.Governor(str(tmp_path)).run()
    assert result["status"] == "advice" and result["value"] == "ondemand, performance"
    assert syschecks.GOVERNOR_FIX in result["advice"]
    _write(tmp_path, "sys/devices/system/cpu/cpu0/cpufreq/scaling_governor", "performance")
    assert syschecks.Governor(str(tmp_path)).run()["status"] == "ok"


def test_thermal_names_the_hottest_zone(tmp_path):
    _write(tmp_path, "sys/class/thermal/thermal_zone0/temp", "45000")
    _write(tmp_path, "sys/class/thermal/thermal_zone0/type", "cpu-thermal")
    _write(tmp_path, "sys/class/thermal/thermal_zone1/temp", "garbage")
    result = syschecks.Thermal(str(tmp_path)).run()
    assert result["status"] == "ok" and result["value"] == "hottest 45.0 C (cpu-thermal)"
    _write(tmp_path, "sys/class/thermal/thermal_zone2/temp", "81500")
    result = syschecks.Thermal(str(tmp_path)).run()
    assert result["status"] == "advice" and "81.5 C (thermal_zone2)" in result["value"]


def _stat(busy, idle):
    # cpu user nice system idle iowait irq softirq steal
    return "cpu  %d 0 0 %d 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\n" % (busy, idle)


def test_other_load_measures_cpu_time_used_while_the_agent_idles(tmp_path):
    _write(tmp_path, "proc/stat", _stat(1000, 1000))

    def busy_interval(_):
        _write(tmp_path, "proc/stat", _stat(1050, 1150))  # 50 busy of 200 jiffies

    result = syschecks.OtherLoad(str(tmp_path), sleep=busy_interval).run()
    assert result["status"] == "advice" and result["value"].startswith("25%")

    def quiet_interval(_):
        _write(tmp_path, "proc/stat", _stat(1051, 1350))

    _write(tmp_path, "proc/stat", _stat(1050, 1150))
    assert syschecks.OtherLoad(str(tmp_path), sleep=quiet_interval).run()["status"] == "ok"
    frozen = syschecks.OtherLoad(str(tmp_path), sleep=lambda _: None).run()
    assert frozen["status"] == "unavailable"
