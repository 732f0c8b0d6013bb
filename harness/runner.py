"""The runner owns execution: compile each cell, run it on the target, analyse it on the host,
and append its record to the journal the moment it ends. A failed cell is recorded and the run
goes on; finished cells are never lost (resume skips them)."""
import logging
import time
from dataclasses import dataclass, field

from .analysis import analyze
from .compile import compile_job
from .job import JobError
from .journal import Journal
from .measurement import measurement
from .provenance import host_provenance
from .stats import median
from .target import TargetError

log = logging.getLogger("odt_bench.run")


@dataclass
class RunSummary:
    ok: int = 0
    failed: int = 0
    skipped: int = 0
    failures: list = field(default_factory=list)


def _describe_job(job):
    return "%s %s %s@%d b%d" % (job.model, job.label, job.data, job.resolution, job.batch)


class Runner:
    def __init__(self, target, cache, journal: Journal, run_id, plan_name):
        self.target = target
        self.cache = cache
        self.journal = journal
        self.run_id = run_id
        self.plan_name = plan_name
        self.provenance = host_provenance()

    def _record(self, job, status, **extra):
        return dict({"target": self.target.name, "cell_id": job.cell_id, "run_id": self.run_id,
                     "plan": self.plan_name, "status": status, "job": job.to_json(),
                     "provenance": self.provenance}, **extra)

    def _failed(self, job, failure, message, detail=""):
        return self._record(job, "failed", error={"failure": failure, "message": message,
                                                  "detail": detail})

    def run_cell(self, job, device):
        """The journal record for one cell (never raises for a failure of the cell itself)."""
        try:
            plan = compile_job(job, self.cache)
        except (JobError, KeyError, ValueError, RuntimeError) as exc:
            return self._failed(job, "invalid-job", str(exc))
        try:
            run = self.target.run(plan, job.timeout_s)
        except TargetError as exc:
            return self._failed(job, exc.failure.value, str(exc), exc.detail)
        try:
            analysis = analyze(plan)
        except Exception as exc:  # a bug in host analysis must not lose the device's data
            log.exception("host analysis failed for %s", job.cell_id)
            return self._failed(job, "analysis-error", "%s: %s" % (type(exc).__name__, exc))
        provenance = dict(self.provenance, seeds=plan["seeds"], threads=job.threads,
                          warmup=job.warmup, artifacts={"checkpoint": plan["checkpoint"],
                                                        "dataset": plan["data"].get("artifact")})
        return self._record(job, "ok", measurement=measurement(run, analysis, self.target.name),
                            device=device, update_plan=plan["update_plan"], provenance=provenance)

    def run(self, jobs, done=frozenset()):
        summary = RunSummary()
        todo = [job for job in jobs if job.cell_id not in done]
        summary.skipped = len(jobs) - len(todo)
        if summary.skipped:
            log.info("resuming: %d of %d cells already in %s", summary.skipped, len(jobs),
                     self.journal.path)
        device = self.target.describe()
        started = time.monotonic()
        for i, job in enumerate(todo, 1):
            log.info("[%d/%d] %s %s ...", i, len(todo), job.cell_id, _describe_job(job))
            record = self.run_cell(job, device)
            self.journal.append(record)
            if record["status"] == "ok":
                summary.ok += 1
                step = median(record["measurement"]["samples"]["step_ns"]) / 1e6
                outcome = "ok, median step %.2f ms" % step
            else:
                summary.failed += 1
                summary.failures.append(record)
                outcome = "FAILED (%s): %s" % (record["error"]["failure"], record["error"]["message"])
            per_cell = (time.monotonic() - started) / i
            log.info("[%d/%d] %s %s; ETA %.0f s", i, len(todo), job.cell_id, outcome,
                     per_cell * (len(todo) - i))
        return summary
