"""The contracts every target driver and power meter implements, and what a device run returns.

A ``Target`` executes an ExecutionPlan where it lives and returns a ``DeviceRun`` (device-raw data:
integer-ns step stamps, region events, the device's result). A ``PowerMeter`` records a ``Trace``
between ``start()`` and ``stop()``; energy is that trace integrated over the device's regions.
Drivers are found by name through the ``odt_bench.targets`` entry-point group (``registry``).
"""
import enum
from dataclasses import dataclass, field
from typing import Mapping, Optional, Protocol, Sequence, runtime_checkable


class Failure(str, enum.Enum):
    TIMEOUT = "timeout"
    CRASH = "crash"
    DEVICE_ERROR = "device-error"
    PROTOCOL = "protocol"
    UNHEALTHY = "unhealthy"


class TargetError(RuntimeError):
    """A job failed on the target; ``failure`` says how, the message says what and where."""

    def __init__(self, failure: Failure, message: str, detail: str = ""):
        super().__init__(message)
        self.failure = Failure(failure)
        self.detail = detail


@dataclass
class DeviceRun:
    """What the device reported for one job, times already converted to integer ns."""

    hello: dict
    steps: list = field(default_factory=list)      # {"i", "phase", "t": [t0, t1, t2, t3]} in ns
    regions: list = field(default_factory=list)    # {"event", "name", "t"} in ns
    result: dict = field(default_factory=dict)
    health: dict = field(default_factory=dict)     # board readings before/after, and flags
    trace: Optional["Trace"] = None                # the power meter's recording, if any
    clock_offset: Optional[object] = None          # harness.energy.ClockOffset of that trace


@dataclass(frozen=True)
class Trace:
    """A power-meter recording on the meter's clock: power per sample, as one series or per rail.

    ``t_ns`` are the sample times (integer ns on the meter's clock). Power is given as ``power_w``
    (watts), or as ``current_a`` and ``voltage_v`` (their product), or per named rail in ``rails``
    (watts, each series as long as ``t_ns``); ``total_rail`` names the rail that is the board's total
    input (e.g. a Jetson's ``POM_5V_IN`` or ``VDD_IN``), if one of them is.
    """

    t_ns: Sequence[int]
    power_w: Optional[Sequence[float]] = None
    current_a: Optional[Sequence[float]] = None
    voltage_v: Optional[Sequence[float]] = None
    rails: Optional[Mapping[str, Sequence[float]]] = None
    total_rail: Optional[str] = None

    def __post_init__(self):
        n = len(self.t_ns)
        series = {"power_w": self.power_w, "current_a": self.current_a, "voltage_v": self.voltage_v}
        series.update(("rail %r" % name, watts) for name, watts in (self.rails or {}).items())
        for what, values in series.items():
            if values is not None and len(values) != n:
                raise ValueError("trace %s has %d samples but t_ns has %d" % (what, len(values), n))
        if self.total_rail is not None and self.total_rail not in (self.rails or {}):
            raise ValueError("trace total_rail %r is not one of its rails %s"
                             % (self.total_rail, sorted(self.rails or {})))

    def power(self, rail: Optional[str] = None) -> list[float]:
        """Watts per sample: of ``rail`` if given; else ``power_w``; else ``current_a * voltage_v``;
        else the ``total_rail``. Raises ValueError naming what is missing."""
        if rail is not None:
            if not self.rails or rail not in self.rails:
                raise ValueError("trace has no rail %r; its rails: %s" % (rail, sorted(self.rails or {})))
            return [float(w) for w in self.rails[rail]]
        if self.power_w is not None:
            return [float(w) for w in self.power_w]
        if self.current_a is not None and self.voltage_v is not None:
            return [float(a) * float(v) for a, v in zip(self.current_a, self.voltage_v)]
        if self.total_rail is not None:
            return [float(w) for w in self.rails[self.total_rail]]
        missing = [name for name in ("current_a", "voltage_v") if getattr(self, name) is None]
        raise ValueError("trace has no power: power_w is missing, and so %s %s (and no total_rail is set)"
                         % ("is" if len(missing) == 1 else "are", " and ".join(missing)))


@runtime_checkable
class Target(Protocol):
    name: str

    def open(self) -> None: ...

    def describe(self) -> dict: ...

    def run(self, plan: dict, timeout_s: float) -> DeviceRun: ...

    def close(self) -> None: ...


@runtime_checkable
class PowerMeter(Protocol):
    def start(self) -> None: ...

    def stop(self) -> Trace: ...
