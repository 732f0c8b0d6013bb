"""The contracts every target driver and power meter implements, and what a device run returns.

A ``Target`` executes an ExecutionPlan where it lives and returns a ``DeviceRun`` (device-raw data:
integer-ns step stamps, region events, the device's result). A ``PowerMeter`` records a ``Trace``
between ``start()`` and ``stop()``; energy is that trace integrated over the device's regions.
Drivers are found by name through the ``odt_bench.targets`` entry-point group (``registry``).
"""
import enum
from dataclasses import dataclass, field
from typing import Optional, Protocol, Sequence, runtime_checkable


class Failure(str, enum.Enum):
    TIMEOUT = "timeout"
    CRASH = "crash"
    DEVICE_ERROR = "device-error"
    PROTOCOL = "protocol"


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
    describe: Optional[dict] = None


@dataclass(frozen=True)
class Trace:
    """A power-meter recording on the meter's clock: power, or current and voltage, per sample."""

    t_ns: Sequence[int]
    power_w: Optional[Sequence[float]] = None
    current_a: Optional[Sequence[float]] = None
    voltage_v: Optional[Sequence[float]] = None


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
