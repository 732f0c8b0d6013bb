"""A power meter that replays a recorded or synthetic trace: the test double of every real meter.

``ReplayMeter`` implements ``harness.target.PowerMeter``: ``start()`` and ``stop()`` only mark its
use, and ``stop()`` returns the trace it was built with (times on the meter's clock, ns). Traces come
from a recorded CSV file (``from_file``) or are synthetic with exactly known energy (``constant``).

The CSV format: optional comment lines starting with ``#`` (one of them may be
``# total_rail=NAME``), a header ``t_ns,<rail1>,<rail2>,...``, then one row per sample: integer ns,
then watts per rail.
"""
import csv
import enum
import io
from pathlib import Path
from typing import Union

from harness.target import Trace


class _State(enum.Enum):
    IDLE = "idle"
    RECORDING = "recording"
    STOPPED = "stopped"


class ReplayMeter:
    """Replays ``trace`` (meter-clock ns) between ``start()`` and ``stop()``."""

    def __init__(self, trace: Trace):
        self.trace = trace
        self._state = _State.IDLE

    def start(self) -> None:
        """Mark the start of a recording; a meter already recording is an error."""
        if self._state is _State.RECORDING:
            raise RuntimeError("ReplayMeter.start() called twice without stop()")
        self._state = _State.RECORDING

    def stop(self) -> Trace:
        """End the recording and return the trace; stop() without a start() is an error."""
        if self._state is not _State.RECORDING:
            raise RuntimeError("ReplayMeter.stop() called before start() (state: %s)" % self._state.value)
        self._state = _State.STOPPED
        return self.trace

    @classmethod
    def constant(cls, watts: float, start_ns: int, stop_ns: int, rate_hz: float,
                 rail: str = "total") -> "ReplayMeter":
        """A trace of constant ``watts`` on ``rail`` (also the total rail) sampled at ``rate_hz`` from
        ``start_ns`` to ``stop_ns`` inclusive: any window inside it holds exactly watts × seconds."""
        if stop_ns <= start_ns or rate_hz <= 0:
            raise ValueError("constant trace needs start_ns < stop_ns and rate_hz > 0, got [%d, %d] at %r Hz"
                             % (start_ns, stop_ns, rate_hz))
        period_ns = 1e9 / rate_hz
        t_ns = []
        i = 0
        while True:
            t = start_ns + round(i * period_ns)
            if t >= stop_ns:
                break
            t_ns.append(t)
            i += 1
        t_ns.append(stop_ns)
        return cls(Trace(t_ns=t_ns, rails={rail: [float(watts)] * len(t_ns)}, total_rail=rail))

    @classmethod
    def from_file(cls, path: Union[str, Path]) -> "ReplayMeter":
        """Read a recorded trace CSV (see the module docstring); errors name the file and line."""
        path = Path(path)
        try:
            text = path.read_text()
        except OSError as e:
            raise ValueError("%s: cannot read the trace file: %s" % (path, e))
        return cls(_parse_csv(text, str(path)))


def _parse_csv(text: str, where: str) -> Trace:
    total_rail = total_line = header = None
    t_ns: list[int] = []
    columns: list[list[float]] = []
    for lineno, line in enumerate(io.StringIO(text), start=1):
        stripped = line.strip()
        if not stripped:
            continue
        if stripped.startswith("#"):
            key, sep, value = stripped[1:].strip().partition("=")
            if sep and key.strip() == "total_rail":
                total_rail, total_line = value.strip(), lineno
            continue
        row = [cell.strip() for cell in next(csv.reader([stripped]))]
        if header is None:
            if len(row) < 2 or row[0] != "t_ns" or not all(row[1:]):
                raise ValueError("%s:%d: header must be 't_ns,<rail>,...', got %r" % (where, lineno, stripped))
            if len(set(row[1:])) != len(row) - 1:
                raise ValueError("%s:%d: repeated rail names in header %r" % (where, lineno, stripped))
            header = row
            columns = [[] for _ in row[1:]]
            continue
        if len(row) != len(header):
            raise ValueError("%s:%d: %d fields, but the header has %d" % (where, lineno, len(row), len(header)))
        try:
            t = int(row[0])
        except ValueError:
            raise ValueError("%s:%d: t_ns %r is not an integer" % (where, lineno, row[0]))
        if t_ns and t <= t_ns[-1]:
            raise ValueError("%s:%d: t_ns %d does not increase (previous %d)" % (where, lineno, t, t_ns[-1]))
        t_ns.append(t)
        for column, name, cell in zip(columns, header[1:], row[1:]):
            try:
                column.append(float(cell))
            except ValueError:
                raise ValueError("%s:%d: %s watts %r is not a number" % (where, lineno, name, cell))
    if header is None:
        raise ValueError("%s: no header line 't_ns,<rail>,...'" % where)
    if not t_ns:
        raise ValueError("%s: no samples after the header" % where)
    if total_rail is not None and total_rail not in header[1:]:
        raise ValueError("%s:%d: total_rail %r is not one of the rails %s"
                         % (where, total_line, total_rail, header[1:]))
    return Trace(t_ns=t_ns, rails=dict(zip(header[1:], columns)), total_rail=total_rail)
