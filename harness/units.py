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



BYTE_UNITS = {"B": 1, "KiB": 1024, "MiB": 1024 ** 2, "GiB": 1024 ** 3, "kB": 1000, "KB": 1000, "MB": 1000 ** 2,
              "GB": 1000 ** 3}
"""Binary (KiB = 1024 B) and decimal (kB = KB = 1000 B) byte units for sizes given as text."""


def parse_bytes(text, what="size"):
    """``"100KiB"`` -> 102400, ``"0.1MB"`` -> 100000; a size without a unit is an error, since
    "100" could mean bytes, KB or KiB."""
    import re

    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*([A-Za-z]+)\s*", str(text))
    if not match or match.group(2) not in BYTE_UNITS:
        raise ValueError("%s %r needs a number and a unit, e.g. 100KiB (1 KiB = 1024 B) or 0.1MB; units: %s"
                         % (what, text, ", ".join(BYTE_UNITS)))
    return int(round(float(match.group(1)) * BYTE_UNITS[match.group(2)]))
