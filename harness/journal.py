"""Run journals: one JSON line per finished cell, appended and fsync'd as each cell ends.

A journal is the source of truth. Reading never stops at a bad line: a corrupt or unknown-schema
line is reported (file and line number) and skipped, so one torn write loses nothing else.
"""
import datetime
import json
import os
from pathlib import Path

SCHEMA_VERSION = 1


class JournalError(RuntimeError):
    pass


class Journal:
    def __init__(self, path):
        self.path = Path(path)

    def append(self, record):
        record = dict(record, schema=SCHEMA_VERSION)
        line = json.dumps(record, sort_keys=True, separators=(",", ":"))
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as f:
            if f.tell() > 0:
                f.seek(-1, os.SEEK_END)
                if f.read(1) != b"\n":
                    f.write(b"\n")  # end a line torn by an earlier crash; it stays skipped
            f.write(line.encode() + b"\n")
            f.flush()
            os.fsync(f.fileno())


def new_journal_path(results_dir, target, plan_name):
    """``results/<target>/<plan>-<UTC stamp>.jsonl``: where a new run's journal goes."""
    stamp = datetime.datetime.now(datetime.timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return Path(results_dir) / target / ("%s-%s.jsonl" % (plan_name, stamp))


def read_journal(path):
    """``(records, problems)``: the valid records and one message per skipped line."""
    path = Path(path)
    records, problems = [], []
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        return [], ["%s: cannot be read (%s)" % (path, exc)]
    for lineno, line in enumerate(text.splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            problems.append("%s:%d: corrupt journal line skipped (%s)" % (path, lineno, exc))
            continue
        if not isinstance(record, dict) or record.get("schema") != SCHEMA_VERSION:
            found = record.get("schema") if isinstance(record, dict) else None
            problems.append("%s:%d: record schema %r is not %d; skipped (upgrade odt-bench?)"
                            % (path, lineno, found, SCHEMA_VERSION))
            continue
        missing = [k for k in ("target", "cell_id", "status", "job") if k not in record]
        if missing:
            problems.append("%s:%d: record lacks %s; skipped" % (path, lineno, ", ".join(missing)))
            continue
        records.append(record)
    return records, problems


def journal_paths(paths):
    """Journal files from files and directories (``*.jsonl`` below a directory), sorted."""
    out = []
    for p in map(Path, paths):
        if p.is_dir():
            out.extend(sorted(p.rglob("*.jsonl")))
        elif p.is_file():
            out.append(p)
        else:
            raise JournalError("no journal file or directory at %s" % p)
    return out
