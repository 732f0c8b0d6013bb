"""Energy integration, window pairing and clock offsets (harness.energy), and the replay meter."""
import pytest

from harness.energy import (ClockOffset, EnergyError, Window, energy_per_window, integrate,
                            offset_from_pings, windows)
from harness.target import PowerMeter, Trace
from targets.replay import ReplayMeter

S = 1_000_000_000  # ns per second


def region(event, t, name="timed"):
    return {"type": "region", "event": event, "name": name, "t": t}


def span(start, stop, name="timed"):
    return [region("start", start, name), region("stop", stop, name)]


# --- integrate --------------------------------------------------------------------------------


def test_constant_power_gives_watts_times_seconds():
    t = [i * S // 10 for i in range(41)]            # 0..4 s at 10 Hz
    assert integrate(t, [2.5] * len(t), 1 * S, 3 * S) == pytest.approx(5.0, abs=1e-12)


def test_piecewise_linear_power_is_integrated_exactly():
    t = [0, 1 * S, 2 * S, 3 * S]
    w = [0.0, 2.0, 2.0, 0.0]                         # ramp up, flat, ramp down
    assert integrate(t, w, 0, 3 * S) == pytest.approx(1.0 + 2.0 + 1.0)
    assert integrate(t, w, 1 * S, 2 * S) == pytest.approx(2.0)


def test_power_is_interpolated_at_the_window_edges():
    t = [0, 1 * S, 2 * S, 3 * S]
    w = [0.0, 2.0, 2.0, 0.0]
    # [0.5, 1]: 1 W -> 2 W = 0.75 J; [1, 2]: 2 J; [2, 2.5]: 2 W -> 1 W = 0.75 J
    assert integrate(t, w, S // 2, 5 * S // 2) == pytest.approx(3.5)


def test_window_inside_one_sample_interval():
    t = [0, 10 * S]
    w = [0.0, 10.0]                                  # P(t) = t watts: E = (b^2 - a^2) / 2
    assert integrate(t, w, 2 * S, 4 * S) == pytest.approx(6.0)
    assert integrate(t, w, 3 * S, 3 * S) == 0.0


@pytest.mark.parametrize("start, stop, words", [
    (S // 2, 2 * S, ["500.000 ms", "after the window starts"]),
    (2 * S, 3 * S + 250_000_000, ["250.000 ms", "before the window stops"]),
])
def test_window_not_covered_names_the_gap(start, stop, words):
    t = [1 * S, 2 * S, 3 * S]
    with pytest.raises(EnergyError) as e:
        integrate(t, [1.0, 1.0, 1.0], start, stop)
    for word in words:
        assert word in str(e.value)


def test_times_must_strictly_increase():
    with pytest.raises(EnergyError, match="strictly increasing: sample 2"):
        integrate([0, S, S, 2 * S], [1.0] * 4, 0, 2 * S)


def test_reversed_window_and_length_mismatch_are_errors():
    with pytest.raises(EnergyError, match="before it starts"):
        integrate([0, S], [1.0, 1.0], S, 0)
    with pytest.raises(EnergyError, match="2 times but 3 power values"):
        integrate([0, S], [1.0, 1.0, 1.0], 0, S)


# --- windows ----------------------------------------------------------------------------------


def test_windows_pairs_events_per_name_in_order():
    events = [region("start", 0, "eval-before"), region("stop", 5, "eval-before"),
              region("start", 10, "warmup"), region("start", 12, "probe"), region("stop", 20, "warmup"),
              region("stop", 25, "probe"), region("start", 30), region("stop", 40)]
    assert windows(events) == [Window("eval-before", 0, 5), Window("warmup", 10, 20),
                               Window("probe", 12, 25), Window("timed", 30, 40)]


@pytest.mark.parametrize("events, message", [
    ([region("stop", 5)], "'timed' stops at t=5 without a start"),
    ([region("start", 5)], "'timed' starts at t=5 and never stops"),
    ([region("start", 9), region("stop", 4)], "'timed' stops at t=4, 5 ns before it starts"),
    ([region("start", 1), region("start", 2)], "'timed' starts again at t=2"),
    ([{"event": "pause", "name": "timed", "t": 3}], "'timed' has event 'pause'"),
])
def test_unmatched_or_reversed_events_name_the_region(events, message):
    with pytest.raises(EnergyError) as e:
        windows(events)
    assert message in str(e.value)


# --- clock offsets ----------------------------------------------------------------------------


def test_offset_from_pings_uses_the_smallest_round_trip():
    # device clock = host clock + 5000 ns; the reply is stamped at different points of each trip
    pings = [
        (0, 700 + 5000, 1000),          # round trip 1000, stamped late: offset estimate 5200
        (2000, 2050 + 5000, 2100),      # round trip 100, midpoint: 5000
        (3000, 3100 + 5000, 3300),      # round trip 300: 4950
    ]
    offset = offset_from_pings(pings)
    assert (offset.offset_ns, offset.uncertainty_ns, offset.n) == (5000, 50, 3)
    assert offset.to_meter(7050) == 2050          # meter (host) time = device time - offset


def test_offset_from_pings_errors():
    with pytest.raises(EnergyError, match="no clock pings"):
        offset_from_pings([])
    with pytest.raises(EnergyError, match="ping #1 is received at 5 ns, before it was sent at 10 ns"):
        offset_from_pings([(0, 1, 2), (10, 7, 5)])


def test_zero_offset_records_its_reason():
    zero = ClockOffset.zero("meter samples the device's CLOCK_MONOTONIC")
    assert (zero.offset_ns, zero.uncertainty_ns, zero.n) == (0, 0, 0)
    assert zero.reason == "meter samples the device's CLOCK_MONOTONIC"
    with pytest.raises(EnergyError):
        ClockOffset.zero("")


# --- energy_per_window ------------------------------------------------------------------------

RAMP = Trace(t_ns=[0, 10 * S], power_w=[0.0, 10.0])   # P = t watts on the meter clock


def test_offset_is_subtracted_from_device_times():
    # device = host - 2 s, so the device window [6 s, 7 s] is meter [8 s, 9 s]: (81 - 64) / 2 J
    offset = ClockOffset(offset_ns=-2 * S, uncertainty_ns=1000, n=5)
    energy = energy_per_window(RAMP, span(6 * S, 7 * S), offset, meter_on_device_clock=False)
    assert energy == {"timed": {"total": pytest.approx(8.5)}}


def test_meter_on_device_clock_ignores_the_offset():
    offset = ClockOffset(offset_ns=-2 * S, uncertainty_ns=0, n=1)
    energy = energy_per_window(RAMP, span(6 * S, 7 * S), offset, meter_on_device_clock=True)
    assert energy["timed"]["total"] == pytest.approx(6.5)     # (49 - 36) / 2


def test_per_rail_joules_and_total_from_the_total_rail():
    t = [0, 1 * S, 2 * S]
    trace = Trace(t_ns=t, rails={"POM_5V_IN": [5.0] * 3, "POM_5V_GPU": [1.0] * 3, "POM_5V_CPU": [2.0, 2.0, 4.0]},
                  total_rail="POM_5V_IN")
    energy = energy_per_window(trace, span(0, 2 * S), ClockOffset.zero("test"), meter_on_device_clock=True)
    assert energy == {"timed": {"POM_5V_IN": pytest.approx(10.0), "POM_5V_GPU": pytest.approx(2.0),
                                "POM_5V_CPU": pytest.approx(5.0), "total": pytest.approx(10.0)}}


def test_rails_without_a_total_rail_have_no_total():
    trace = Trace(t_ns=[0, S], rails={"a": [1.0, 1.0], "b": [3.0, 3.0]})
    energy = energy_per_window(trace, span(0, S), ClockOffset.zero("test"), True)
    assert energy == {"timed": {"a": pytest.approx(1.0), "b": pytest.approx(3.0)}}


def test_current_times_voltage_when_no_power_series():
    trace = Trace(t_ns=[0, S], current_a=[0.5, 0.5], voltage_v=[5.0, 5.0])
    assert energy_per_window(trace, span(0, S), ClockOffset.zero("t"), True) == {"timed": {"total": pytest.approx(2.5)}}


def test_duplicate_window_names_get_suffixes():
    events = span(0, S) + span(S, 2 * S, "warmup") + span(2 * S, 3 * S) + span(3 * S, 4 * S)
    trace = Trace(t_ns=[0, 4 * S], power_w=[1.0, 1.0])
    energy = energy_per_window(trace, events, ClockOffset.zero("t"), True)
    assert list(energy) == ["timed", "warmup", "timed#2", "timed#3"]
    assert all(e["total"] == pytest.approx(1.0) for e in energy.values())


def test_uncovered_window_error_names_window_and_rail():
    offset = ClockOffset(offset_ns=5 * S, uncertainty_ns=0, n=1)   # meter window [-4 s, -3 s]
    with pytest.raises(EnergyError) as e:
        energy_per_window(RAMP, span(S, 2 * S, "eval-before") + span(6 * S, 7 * S), offset, False)
    assert "'eval-before'" in str(e.value) and "4000.000 ms after the window starts" in str(e.value)


# --- Trace.power ------------------------------------------------------------------------------


def test_trace_power_sources_and_missing_power():
    assert Trace(t_ns=[0, 1], power_w=[1, 2]).power() == [1.0, 2.0]
    assert Trace(t_ns=[0, 1], current_a=[1, 2], voltage_v=[5, 5]).power() == [5.0, 10.0]
    assert Trace(t_ns=[0, 1], rails={"VDD_IN": [3, 4]}, total_rail="VDD_IN").power() == [3.0, 4.0]
    assert Trace(t_ns=[0, 1], rails={"a": [3, 4]}).power("a") == [3.0, 4.0]
    with pytest.raises(ValueError, match="power_w is missing, and so is voltage_v"):
        Trace(t_ns=[0, 1], current_a=[1, 2]).power()
    with pytest.raises(ValueError, match="no rail 'b'"):
        Trace(t_ns=[0, 1], rails={"a": [3, 4]}).power("b")
    with pytest.raises(ValueError, match="rail 'a' has 1 samples but t_ns has 2"):
        Trace(t_ns=[0, 1], rails={"a": [3]})


# --- ReplayMeter ------------------------------------------------------------------------------


def test_replay_constant_gives_exact_joules():
    meter = ReplayMeter.constant(2.5, 0, 4_000_000_000, 50)
    assert isinstance(meter, PowerMeter)
    meter.start()
    trace = meter.stop()
    assert len(trace.t_ns) == 201 and trace.t_ns[-1] == 4 * S
    energy = energy_per_window(trace, span(1 * S, 3 * S), ClockOffset.zero("replay"), True)
    assert energy["timed"]["total"] == pytest.approx(5.0, abs=1e-12)


def test_replay_constant_with_an_uneven_rate_ends_at_stop():
    trace = ReplayMeter.constant(1.0, 0, S, 3, rail="VDD_IN").trace
    assert trace.t_ns == [0, 333_333_333, 666_666_667, S] and trace.total_rail == "VDD_IN"
    assert integrate(trace.t_ns, trace.power("VDD_IN"), 0, S) == pytest.approx(1.0)


def test_replay_stop_before_start_is_an_error():
    meter = ReplayMeter.constant(1.0, 0, S, 10)
    with pytest.raises(RuntimeError, match="stop\\(\\) called before start\\(\\)"):
        meter.stop()
    meter.start()
    meter.stop()
    with pytest.raises(RuntimeError, match="before start"):
        meter.stop()


def test_replay_from_file(tmp_path):
    path = tmp_path / "nano.csv"
    path.write_text("# recorded on a Jetson Nano\n# total_rail=POM_5V_IN\nt_ns,POM_5V_IN,POM_5V_GPU\n"
                    "0,2.0,0.5\n1000000000,2.0,1.5\n2000000000,4.0,1.5\n")
    trace = ReplayMeter.from_file(path).trace
    assert list(trace.t_ns) == [0, S, 2 * S] and trace.total_rail == "POM_5V_IN"
    energy = energy_per_window(trace, span(0, 2 * S), ClockOffset.zero("t"), True)
    assert energy["timed"] == {"POM_5V_IN": pytest.approx(5.0), "POM_5V_GPU": pytest.approx(2.5),
                               "total": pytest.approx(5.0)}


@pytest.mark.parametrize("text, where", [
    ("t_ns,a\n0,1\nx,2\n", ":3: t_ns 'x' is not an integer"),
    ("t_ns,a\n0,1\n1,2,3\n", ":3: 3 fields, but the header has 2"),
    ("# total_rail=b\nt_ns,a\n0,1\n", ":1: total_rail 'b' is not one of the rails"),
    ("time,a\n0,1\n", ":1: header must be"),
    ("t_ns,a\n5,1\n5,1\n", ":3: t_ns 5 does not increase"),
    ("t_ns,a\n0,watts\n", ":2: a watts 'watts' is not a number"),
])
def test_replay_file_errors_name_file_and_line(tmp_path, text, where):
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        ReplayMeter.from_file(path)
    assert str(e.value).startswith(str(path) + where)
