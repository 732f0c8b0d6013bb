"""Targets files, board health parsing and doctor checks (pure; no SSH needed)."""
import pytest

from harness.registry import UnknownName, target
from targets import doctor
from targets.config import TargetConfigError, load_targets
from targets.jetson import parse_health as jetson_health
from targets.pi import parse_health, throttle_flags

GOOD = """[targets.pi4]
kind = "raspberry-pi"
host = "192.168.1.20"
user = "pi"
identity_file = "{key}"
known_hosts = "{key}"
workdir = "/home/pi/odt-bench"
python = "/home/pi/odt/bin/python"
"""


@pytest.fixture
def key(tmp_path):
    path = tmp_path / "id"
    path.write_text("not really a key")
    return path


def _file(tmp_path, text):
    path = tmp_path / "targets.toml"
    path.write_text(text)
    return path


def test_a_good_file_gives_frozen_descriptions_with_defaults(tmp_path, key):
    (host,) = load_targets(_file(tmp_path, GOOD.format(key=key))).values()
    assert (host.name, host.port, host.strict, host.insecure_no_host_key_check) == ("pi4", 22, False, False)
    with pytest.raises(AttributeError):
        host.port = 23


@pytest.mark.parametrize("change,text", [
    (('user = "pi"\n', 'user = "pi"\ncolour = "red"\n'), "unknown key 'colour'"),
    (('user = "pi"\n', ''), "missing key 'user'"),
    (('kind = "raspberry-pi"', 'kind = "toaster"'), "kind 'toaster' is not one of raspberry-pi, jetson"),
    (('workdir = "/home/pi/odt-bench"', 'workdir = "odt"'), "must be an absolute path"),
    (('user = "pi"\n', 'user = "pi"\nport = "22"\n'), "key 'port' must be int"),
    (('user = "pi"\n', 'user = "pi"\nstrict = 1\n'), "key 'strict' must be bool"),
])
def test_bad_descriptions_name_the_file_target_and_key(tmp_path, key, change, text):
    path = _file(tmp_path, GOOD.format(key=key).replace(*change))
    with pytest.raises(TargetConfigError, match=text) as err:
        load_targets(path)
    assert str(err.value).startswith("%s [targets.pi4]" % path)


def test_missing_key_files_and_targets_files_are_named(tmp_path, key):
    with pytest.raises(TargetConfigError, match="identity_file file .*nope does not exist"):
        load_targets(_file(tmp_path, GOOD.format(key=key).replace('identity_file = "%s"' % key,
                                                                  'identity_file = "%s"' % (tmp_path / "nope"))))
    with pytest.raises(TargetConfigError, match="targets file .*none.toml does not exist"):
        load_targets(tmp_path / "none.toml")


def test_unknown_targets_list_the_known_ones(tmp_path, key):
    path = _file(tmp_path, GOOD.format(key=key))
    with pytest.raises(UnknownName, match=r"unknown target 'pi5'; known targets: local, pi4 \(%s\)" % path):
        target("pi5", None, str(path))
    assert target("pi4", None, str(path)).host.host == "192.168.1.20"


def test_an_undescribed_target_says_where_and_how_to_describe_it(tmp_path, key):
    path = _file(tmp_path, GOOD.format(key=key))
    with pytest.raises(UnknownName) as err:
        target("pi5", None, str(path))
    assert str(err.value).endswith("describe it in a [targets.pi5] table of %s (README, \"Remote targets\")" % path)
    with pytest.raises(UnknownName) as err:  # a kind's name, and no targets file
        target("jetson", None, str(tmp_path / "none.toml"))
    assert "There is no targets file at %s" % (tmp_path / "none.toml") in str(err.value)
    assert 'a [targets.jetson] table with kind = "jetson"' in str(err.value)
    assert "--targets FILE or $ODT_BENCH_TARGETS" in str(err.value)


def test_pi_health_and_throttle_flags():
    recorded = "throttled=0x50000\ntemp=47.2'C\nfrequency(48)=1800404352\nondemand\n"
    health = parse_health(recorded)
    assert health == {"throttled": 0x50000, "temp_c": 47.2, "arm_hz": 1800404352, "governor": "ondemand"}
    assert throttle_flags(health, health) == []  # happened before the job: not this job's fault
    assert throttle_flags({"throttled": 0}, {"throttled": 0x50000}) == [
        "under-voltage occurred during the job", "throttled occurred during the job"]
    assert throttle_flags({"throttled": 0x8}, {"throttled": 0}) == ["soft temperature limit now"]
    assert throttle_flags({"throttled": None}, {"throttled": 0})[0].startswith("throttling state unreadable")


def test_jetson_health():
    health = jetson_health("nvpmodel: NV Power Mode: MAXN\ngovernor: schedutil\nclocks: 1479000 1479000\n"
                           "thermal: CPU-therm 31500\nthermal: GPU-therm 30000\n")
    assert health == {"nvpmodel": "NV Power Mode: MAXN", "governor": "schedutil", "clocks_pinned": True,
                      "thermal_c": {"CPU-therm": 31.5, "GPU-therm": 30.0}}


def test_doctor_reads_a_healthy_and_an_unhealthy_device():
    healthy = doctor.checks("python: 3.11.2\nfloor: device stack OK: Python 3.11.2, torch 2.5.1\n"
                            "memory_kib: 3000000\ndisk_kib: 20000000\ngovernor: performance\n"
                            "clock_khz: 1800000 1800000\ntool: vcgencmd /usr/bin/vcgencmd\n", {}, "fix")
    assert [c.status for c in healthy] == ["ok"] * 7 and not doctor.failed(healthy)
    sick = doctor.checks("python: 3.6.9\nfloor: device stack NOT OK (Python 3.6.9, torch none):\n"
                         "floor:   - torch is not installed\nmemory_kib: 100000\ndisk_kib: 1000\n"
                         "governor: ondemand\nclock_khz: 600000 1800000\ntool: vcgencmd MISSING\n",
                         {"vcgencmd": "sudo apt install raspi-utils"}, "install torch")
    by_name = {}
    for c in sick:
        by_name.setdefault(c.name, []).append(c)
    assert doctor.failed(sick)
    assert by_name["floor"][0].status == "FAIL" and by_name["floor"][0].fix == "install torch"
    assert by_name["floor"][0].detail.endswith("- torch is not installed")
    assert [by_name[n][0].status for n in ("memory", "disk", "governor", "clocks")] == ["warn"] * 4
    assert by_name["vcgencmd"][0].status == "FAIL" and by_name["vcgencmd"][0].fix == "sudo apt install raspi-utils"
