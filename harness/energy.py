"""Energy of the device's regions: a power trace integrated over region windows, clocks aligned.

Pure functions on plain data (standard library only). The device stamps its region events on the
DEVICE clock; a power meter records its ``Trace`` on the METER clock. Two cases:

- the meter samples on the device's own clock (e.g. a Jetson's rail sampler running on the board,
  stamping with CLOCK_MONOTONIC like the agent): meter time = device time, use
  ``ClockOffset.zero(reason)`` and ``meter_on_device_clock=True``;
- the meter runs on the host's clock (a USB meter, RAPL, NVML on the host): measure the offset with
  pings (``offset_from_pings``) and convert ``meter_time = device_time - offset_ns``.

Energy of a window = the trapezoidal integral of power over [start, stop] in meter time, with the
power linearly interpolated at the window's ends (``integrate``).
"""
import bisect
import math
from dataclasses import dataclass
from typing import Iterable, Mapping, Optional, Sequence

from harness.target import Trace

TOTAL = "total"


class EnergyError(ValueError):
    """Regions, pings or a trace cannot give an energy; the message says what and where."""


@dataclass(frozen=True)
class Window:
    """One region's window on some clock: the ``name`` and its start and stop times in ns."""

    name: str
    start_ns: int
    stop_ns: int

    @property
    def duration_ns(self) -> int:
        return self.stop_ns - self.start_ns

    def shifted(self, delta_ns: int) -> "Window":
        """The same window with ``delta_ns`` added to both ends."""
        return Window(self.name, self.start_ns + delta_ns, self.stop_ns + delta_ns)


@dataclass(frozen=True)
class ClockOffset:
    """How the device clock relates to the host clock: ``device_time = host_time + offset_ns``.

    So an event the device stamped at ``d`` happened at host (= meter) time ``d - offset_ns``, known
    to within ``uncertainty_ns``; ``n`` pings were taken to measure it. ``reason`` says why an offset
    was not measured (``ClockOffset.zero``).
    """

    offset_ns: int
    uncertainty_ns: int
    n: int
    reason: Optional[str] = None

    @classmethod
    def zero(cls, reason: str) -> "ClockOffset":
        """No offset: for a meter that samples the device's own clock; ``reason`` says which."""
        if not reason:
            raise EnergyError("ClockOffset.zero needs a reason (e.g. 'meter samples CLOCK_MONOTONIC on the device')")
        return cls(offset_ns=0, uncertainty_ns=0, n=0, reason=reason)

    def to_meter(self, device_ns: int) -> int:
        """A device-clock time on the host (meter) clock: ``device_ns - offset_ns``."""
        return device_ns - self.offset_ns


def windows(regions: Iterable[Mapping]) -> list[Window]:
    """Pair region events (``{"event": "start"|"stop", "name", "t"}``) into windows, per name in order.

    A name's n-th stop closes its n-th start; windows are returned in the order of their starts.
    A stop without an open start, a second start while one is open, a start never stopped, a stop
    earlier than its start, or an unknown event raises EnergyError naming the region.
    """
    open_starts: dict[str, tuple[int, int]] = {}   # name -> (start order, t)
    found: list[tuple[int, Window]] = []
    for order, event in enumerate(regions):
        try:
            kind, name, t = event["event"], event["name"], int(event["t"])
        except (KeyError, TypeError, ValueError) as e:
            raise EnergyError("region event #%d %r lacks a valid event, name or t (%s)" % (order, event, e))
        if kind == "start":
            if name in open_starts:
                raise EnergyError("region %r starts again at t=%d while started at t=%d and not stopped"
                                  % (name, t, open_starts[name][1]))
            open_starts[name] = (order, t)
        elif kind == "stop":
            if name not in open_starts:
                raise EnergyError("region %r stops at t=%d without a start" % (name, t))
            started_order, start = open_starts.pop(name)
            if t < start:
                raise EnergyError("region %r stops at t=%d, %d ns before it starts at t=%d"
                                  % (name, t, start - t, start))
            found.append((started_order, Window(name, start, t)))
        else:
            raise EnergyError("region %r has event %r; expected 'start' or 'stop'" % (name, kind))
    if open_starts:
        name, (_, t) = min(open_starts.items(), key=lambda item: item[1][0])
        raise EnergyError("region %r starts at t=%d and never stops" % (name, t))
    return [w for _, w in sorted(found, key=lambda item: item[0])]


def offset_from_pings(pings: Iterable[Sequence[int]]) -> ClockOffset:
    """The device clock's offset from the host clock, NTP style, from ``(host_send_ns, device_ns,
    host_recv_ns)`` pings: the host stamps a ping's send and its reply's receipt, the device stamps
    its reply in between.

    The ping with the smallest round trip ``host_recv - host_send`` is used: ``offset_ns = device_ns
    - (host_send + host_recv) / 2`` (device time minus the round trip's midpoint, so
    ``device_time = host_time + offset_ns`` and ``meter_time = device_time - offset_ns`` for a meter
    on the host clock); ``uncertainty_ns`` is half that round trip (rounded up), since the device's
    stamp can lie anywhere inside it. No pings, or a reply received before its send, raise EnergyError.
    """
    pings = [tuple(p) for p in pings]
    if not pings:
        raise EnergyError("no clock pings: cannot measure the device's clock offset")
    best = None
    for i, ping in enumerate(pings):
        if len(ping) != 3:
            raise EnergyError("clock ping #%d is %r; expected (host_send_ns, device_ns, host_recv_ns)" % (i, ping))
        send, device, recv = (int(x) for x in ping)
        if recv < send:
            raise EnergyError("clock ping #%d is received at %d ns, before it was sent at %d ns" % (i, recv, send))
        if best is None or recv - send < best[2] - best[0]:
            best = (send, device, recv)
    send, device, recv = best
    round_trip = recv - send
    return ClockOffset(offset_ns=device - (send + recv) // 2, uncertainty_ns=(round_trip + 1) // 2, n=len(pings))


def _ms(ns: int) -> str:
    return "%.3f ms" % (ns / 1e6)


def integrate(t_ns: Sequence[int], watts: Sequence[float], start_ns: int, stop_ns: int) -> float:
    """Joules over [start_ns, stop_ns]: the trapezoidal rule over the samples, with the power linearly
    interpolated at the window's two ends.

    Raises EnergyError if the times are not strictly increasing, if the series differ in length, if
    the window is reversed, or if the samples do not cover the window (saying by how much).
    """
    n = len(t_ns)
    if len(watts) != n:
        raise EnergyError("trace has %d times but %d power values" % (n, len(watts)))
    if stop_ns < start_ns:
        raise EnergyError("window stops at %d ns, before it starts at %d ns" % (stop_ns, start_ns))
    if n == 0:
        raise EnergyError("trace has no samples; the window [%d, %d] ns is not covered" % (start_ns, stop_ns))
    for i in range(1, n):
        if t_ns[i] <= t_ns[i - 1]:
            raise EnergyError("trace times are not strictly increasing: sample %d at %d ns follows %d ns"
                              % (i, t_ns[i], t_ns[i - 1]))
    if start_ns < t_ns[0]:
        raise EnergyError("trace starts %s after the window starts (trace from %d ns, window [%d, %d] ns)"
                          % (_ms(t_ns[0] - start_ns), t_ns[0], start_ns, stop_ns))
    if stop_ns > t_ns[-1]:
        raise EnergyError("trace ends %s before the window stops (trace until %d ns, window [%d, %d] ns)"
                          % (_ms(stop_ns - t_ns[-1]), t_ns[-1], start_ns, stop_ns))

    def power_at(t: int) -> float:
        i = bisect.bisect_right(t_ns, t) - 1     # t_ns[i] <= t
        if i >= n - 1 or t_ns[i] == t:
            return float(watts[i])
        frac = (t - t_ns[i]) / (t_ns[i + 1] - t_ns[i])
        return float(watts[i]) + frac * (float(watts[i + 1]) - float(watts[i]))

    inside = range(bisect.bisect_right(t_ns, start_ns), bisect.bisect_left(t_ns, stop_ns))
    times = [start_ns] + [t_ns[i] for i in inside] + [stop_ns]
    power = [power_at(start_ns)] + [float(watts[i]) for i in inside] + [power_at(stop_ns)]
    return math.fsum((power[k] + power[k + 1]) * (times[k + 1] - times[k])
                     for k in range(len(times) - 1)) / 2e9


def _unique_names(names: Iterable[str]) -> list[str]:
    seen: set[str] = set()
    out = []
    for name in names:
        key, k = name, 1
        while key in seen:
            k += 1
            key = "%s#%d" % (name, k)
        seen.add(key)
        out.append(key)
    return out


def _series(trace: Trace) -> dict[str, list[float]]:
    """Watts per key: every rail plus ``total`` (the total rail), or the one power series as ``total``."""
    if trace.rails:
        if TOTAL in trace.rails and trace.total_rail != TOTAL:
            raise EnergyError("trace has a rail named %r that is not its total rail (%r); rename it"
                              % (TOTAL, trace.total_rail))
        series = {name: trace.power(name) for name in trace.rails}
        if trace.total_rail is not None:
            series[TOTAL] = trace.power(trace.total_rail)
        return series
    try:
        return {TOTAL: trace.power()}
    except ValueError as e:
        raise EnergyError(str(e))


def energy_per_window(trace: Trace, regions: Iterable[Mapping], offset: ClockOffset,
                      meter_on_device_clock: bool) -> dict[str, dict[str, float]]:
    """Joules per window and per rail: ``{window: {rail: J, ..., "total": J}}``.

    Region events (device clock) are paired by ``windows`` and converted to meter time: unchanged if
    ``meter_on_device_clock``, else ``device_time - offset.offset_ns``. Per window: the joules of
    every rail of ``trace.rails`` plus ``"total"`` = the joules of ``trace.total_rail`` when that is
    set; a trace without rails gives its one power series (``trace.power()``) under ``"total"``.
    Repeated window names get ``#2``, ``#3``... in order. A window the trace does not cover raises
    EnergyError naming the window.
    """
    wins = windows(regions)
    shift = 0 if meter_on_device_clock else -offset.offset_ns
    series = _series(trace)
    t_ns = list(trace.t_ns)
    out: dict[str, dict[str, float]] = {}
    for key, win in zip(_unique_names(w.name for w in wins), wins):
        meter = win.shifted(shift)
        joules = {}
        for rail, watts in series.items():
            try:
                joules[rail] = integrate(t_ns, watts, meter.start_ns, meter.stop_ns)
            except EnergyError as e:
                raise EnergyError("window %r (meter time [%d, %d] ns), %s: %s"
                                  % (key, meter.start_ns, meter.stop_ns, rail, e))
        out[key] = joules
    return out
