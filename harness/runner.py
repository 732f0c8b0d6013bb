"""The runner owns execution: compile each cell, run it on the target, analyse it on the host,
and append its record to the journal the moment it ends. A failed cell is recorded and the run
goes on; finished cells are never lost (resume skips them). A cell that failed in a way that may
not recur (timeout, crash, lost connection, unhealthy device) is retried up to ``retries`` times;
every attempt is journaled, the latest wins when results are read.

Both front ends drive it: ``odt-bench run`` through ``run``, the pytest suite (``suites/``) one
cell at a time through ``start`` and ``run_one``."""
import logging
import time
from dataclasses import dataclass, field

from .analysis import analyze
from .compile import compile_job
from .job import JobError, unique_names
from .journal import Journal
from .measurement import measurement
from .provenance import host_provenance
from .stats import median
from .target import Failure, TargetError

log = logging.getLogger("odt_bench.run")
RETRYABLE = frozenset(f.value for f in (Failure.TIMEOUT, Failure.CRASH, Failure.PROTOCOL, Failure.UNHEALTHY))
DEFAULT_RETRIES = 0
"""Retries are opt-in: a cell that hangs or crashes usually does so again, and a retry doubles its time."""


@dataclass
class RunSummary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list = field(default_factory=list)


def _duration(seconds):
    seconds = int(round(seconds))
    return "%d min %02d s" % divmod(seconds, 60) if seconds >= 60 else "%d s" % seconds


def _outcome(record):
    if record["status"] == "ok":
        return "ok, median step %.2f ms" % (median(record["measurement"]["samples"]["step_ns"]) / 1e6)
    return "FAILED (%s): %s" % (record["error"]["failure"], record["error"]["message"])


class Runner:
    def __init__(self, target, cache, journal: Journal, run_id, plan_name, retries=DEFAULT_RETRIES):
        if retries < 0:
            raise ValueError("retries must be >= 0, got %r" % (retries,))
        self.target = target
        self.cache = cache
        self.journal = journal
        self.run_id = run_id
        self.plan_name = plan_name
        self.retries = retries
        self.provenance = host_provenance()
        self.device = None
        self.names = {}

    def _record(self, job, status, **extra):
        """A journal record of this run; every record, failed ones too, carries the device the run
        described (``None`` before ``start``)."""
        return dict({"target": self.target.name, "cell_id": job.cell_id, "run_id": self.run_id,
                     "plan": self.plan_name, "status": status, "job": job.to_json(),
                     "provenance": self.provenance, "device": self.device}, **extra)

    def _failed(self, job, failure, message, detail=""):
        return self._record(job, "failed", error={"failure": failure, "message": message,
                                                  "detail": detail})

    def run_cell(self, job):
        """The journal record for one cell (never raises for a failure of the cell itself)."""
        try:
            plan = compile_job(job, self.cache)
        except (JobError, KeyError, ValueError, RuntimeError) as exc:
            return self._failed(job, "invalid-job", str(exc))
        try:
            run = self.target.run(plan, job.timeout_s)
        except TargetError as exc:
            return self._failed(job, exc.failure.value, str(exc), exc.detail)
        selection = run.result.get("selection")
        if selection:  # the plan the device chose (TinyTrain) is the plan measured
            plan = dict(plan, update_plan=selection["update_plan"])
        try:
            analysis = analyze(plan)
        except Exception as exc:  # a bug in host analysis must not lose the device's data
            log.exception("host analysis failed for %s", job.cell_id)
            return dict(self._failed(job, "analysis-error", "%s: %s" % (type(exc).__name__, exc)),
                        measurement=measurement(run, {}, self.target.name, job.numeric))
        artifacts = {"checkpoint": plan["checkpoint"], "dataset": plan["data"].get("artifact")}
        provenance = dict(self.provenance, seeds=plan["seeds"], threads=job.threads, warmup=job.warmup,
                          artifacts=artifacts,
                          artifact_recipes={sha: self.cache.made(sha) for sha in artifacts.values() if sha})
        return self._record(job, "ok", measurement=measurement(run, analysis, self.target.name, job.numeric),
                            update_plan=plan["update_plan"], provenance=provenance)

    def start(self, jobs):
        """Describe the device once and name the cells; call before ``run_one``."""
        self.device = self.target.describe()
        self.names = unique_names(jobs)

    def run_one(self, job):
        """Run one cell (with its retries), journal every attempt, return the last record."""
        attempt = 1
        while True:
            record = dict(self.run_cell(job), attempt=attempt)
            self.journal.append(record)
            failure = record.get("error", {}).get("failure")
            if record["status"] == "ok" or failure not in RETRYABLE or attempt > self.retries:
                return record
            log.warning("%s %s: attempt %d failed (%s); retrying", job.cell_id, self.names[job.cell_id], attempt,
                        failure)
            attempt += 1

    def run(self, jobs, done=frozenset()):
        summary = RunSummary()
        todo = [job for job in jobs if job.cell_id not in done]
        summary.skipped = len(jobs) - len(todo)
        if summary.skipped:
            log.info("resuming: %d of %d cells already in %s", summary.skipped, len(jobs),
                     self.journal.path)
        self.start(jobs)
        started = time.monotonic()
        for i, job in enumerate(todo, 1):
            log.info("[%d/%d] %s %s ...", i, len(todo), job.cell_id, self.names[job.cell_id])
            record = self.run_one(job)
            if record["status"] == "ok":
                summary.ok += 1
            else:
                summary.failed += 1
                summary.failures.append(record)
            elapsed = time.monotonic() - started
            eta = " ETA %s" % _duration(elapsed / i * (len(todo) - i)) if i < len(todo) else ""
            log.info("[%d/%d] %s %s; %s elapsed%s", i, len(todo), job.cell_id, _outcome(record),
                     _duration(elapsed), eta)
        return summary
