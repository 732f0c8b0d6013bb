"""The one units table, the source tags, and ``Figure``: a number with its unit, source and reason.

Every figure the harness stores or prints is a ``Figure``. A missing figure is ``value=None`` with a
``reason``; a figure's ``per`` says whether it is per step, per batch or per sample.
"""
import enum
from dataclasses import asdict, dataclass
from typing import Optional

UNITS = {
    "ns": "nanoseconds",
    "bytes": "bytes (KiB = 1024 B, MiB = 1024 KiB)",
    "MAC": "multiply-accumulates (1 MAC = 2 FLOP)",
    "FLOP": "floating-point operations",
    "fraction": "a ratio between 0 and 1",
    "count": "a plain count (e.g. parameters)",
    "J": "joules",
    "W": "watts",
}

PER = ("step", "batch", "sample", "run", "model")


class Source(str, enum.Enum):
    MEASURED = "measured"
    ANALYTIC = "analytic"
    EMULATED = "emulated"
    MODELLED = "modelled"


@dataclass(frozen=True)
class Figure:
    """One number: ``value`` in ``unit`` from ``source``; ``None`` value requires a ``reason``."""

    value: Optional[float]
    unit: str
    source: Source
    per: str = "batch"
    reason: Optional[str] = None
    how: Optional[str] = None

    def __post_init__(self):
        if self.unit not in UNITS:
            raise ValueError("unit %r is not in the units table %s" % (self.unit, sorted(UNITS)))
        if self.per not in PER:
            raise ValueError("per %r must be one of %s" % (self.per, PER))
        if self.value is None and not self.reason:
            raise ValueError("a missing figure needs a reason")
        object.__setattr__(self, "source", Source(self.source))

    def to_json(self):
        d = asdict(self)
        d["source"] = self.source.value
        return d


def missing(unit, source, reason, per="batch"):
    return Figure(None, unit, source, per=per, reason=reason)
