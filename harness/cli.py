"""The odt-bench command line: run, analyze, report, export, list, doctor, search-sparse,
pretrain, meta-train.

Exit codes: 0 every cell ok; 1 some cells failed (their records and all others are kept) or the
target could not be reached; 2 bad input (unknown name, bad plan, unreadable file); 130
interrupted (finished cells kept); 141 output cut off by a reader that closed early (| head).
"""
import argparse
import json
import logging
import os
import sys
import time
from collections import Counter
from pathlib import Path

from . import registry
from .cache import ArtifactCache
from .job import JobError, unique_names
from .journal import Journal, JournalError, new_journal_path, read_journal
from .keywords import KeywordError, matcher
from .metatrain import EPISODES, PROTOCOL, meta_train
from .plan import PlanError, apply_overrides, jobs_from, load_plan, parse_overrides, plan_names
from .runner import DEFAULT_RETRIES, Runner
from .target import TargetError

EXIT_OK, EXIT_CELLS_FAILED, EXIT_USAGE, EXIT_INTERRUPTED, EXIT_PIPE_CLOSED = 0, 1, 2, 130, 141
CELL_FLAGS = (("data", str), ("resolution", int), ("batch", int), ("steps", int), ("warmup", int),
              ("seed", int), ("lr", float), ("lr_schedule", str), ("threads", int), ("timeout_s", float),
              ("checkpoint", str), ("mode", str), ("ops", str), ("numeric", str), ("cpus", str),
              ("device", str), ("episode", str))
TARGETS_ENV = "ODT_BENCH_TARGETS"
log = logging.getLogger("odt_bench")


class UsageError(Exception):
    pass


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a record is emitted."""

    @property
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, _):
        pass


def _setup_logging():
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


PARAM_ALIASES = {"k": ("--last-k",)}
"""Other spellings of method-parameter flags: ``--last-k`` for bp-last-k's and gradfilter's ``k``."""


def _method_flags():
    """``{param: (type, help)}`` over every method; a parameter several methods declare names them all."""
    kinds, helps, owners = {}, {}, {}
    for name in registry.names(registry.METHODS):
        for param, (kind, help_text) in registry.load(registry.METHODS, name).params.items():
            kinds[param], helps[param] = kind, helps.get(param, help_text)
            owners.setdefault(param, []).append(name)
    return {param: (kinds[param], "%s: %s" % (", ".join(owners[param]), helps[param])) for param in kinds}


def _add_cell_flags(parser):
    group = parser.add_argument_group("a single cell (instead of a plan)",
                                      "each flag sets the job field of its name (README, Plans)")
    group.add_argument("--model", help="model name (odt-bench list models), e.g. mbv2-w0.35, resnet18")
    group.add_argument("--method", help="method name")
    for name, kind in CELL_FLAGS:
        group.add_argument("--" + name.replace("_", "-"), dest=name, type=kind)
    for param, (kind, help_text) in sorted(_method_flags().items()):
        group.add_argument("--" + param, *PARAM_ALIASES.get(param, ()), dest="param_" + param, type=kind,
                           help=help_text)


def _adhoc_jobs(args):
    """Jobs for the single cell the flags describe (and ``--set`` overrides, where given)."""
    if not args.model or not args.method:
        raise UsageError("a single cell needs both --model and --method")
    defaults = {name: getattr(args, name) for name, _ in CELL_FLAGS if getattr(args, name) is not None}
    params = {k[len("param_"):]: v for k, v in vars(args).items() if k.startswith("param_") and v is not None}
    doc = {"defaults": defaults, "methods": {args.method: params},
           "cells": [{"model": args.model, "method": args.method}]}
    return jobs_from(apply_overrides(doc, parse_overrides(getattr(args, "overrides", None))),
                     "the cell of --model/--method", numbered=False)


def _selected(jobs, expression):
    """The jobs whose names match the ``-k`` expression (all when none is given)."""
    if not expression:
        return jobs
    names = unique_names(jobs)
    keep = matcher(expression)
    chosen = [job for job in jobs if keep(names[job.cell_id])]
    if not chosen:
        raise UsageError("-k %r matches none of the %d cells (names look like %s)"
                         % (expression, len(jobs), names[jobs[0].cell_id]))
    return chosen


def _targets_file(args):
    return args.targets or os.environ.get(TARGETS_ENV) or "targets.toml"


def _target(args, cache):
    return registry.target(args.target, cache, _targets_file(args))


def _latest_journal(results, target, plan):
    found = sorted((Path(results) / target).glob(plan + "-*.jsonl"))
    if not found:
        raise UsageError("--resume: no journal of plan %r in %s" % (plan, Path(results) / target))
    return found[-1]


def cmd_run(args):
    if args.model or args.method:
        jobs, plan_name = _adhoc_jobs(args), "adhoc"
    else:
        given = [name for name, _ in CELL_FLAGS if getattr(args, name) is not None]
        if given:
            raise UsageError("--%s describes a single cell; give --model and --method too, "
                             "or put it in the plan" % given[0].replace("_", "-"))
        plan = load_plan(args.plan, parse_overrides(args.overrides))
        jobs, plan_name = list(plan.jobs), plan.name
    jobs = _selected(jobs, args.keyword)
    if args.retries < 0:
        raise UsageError("--retries must be 0 or more, got %d" % args.retries)
    if args.dry_run:
        names = unique_names(jobs)
        for job in jobs:
            print("%s  %s  steps=%d warmup=%d mode=%s" % (job.cell_id, names[job.cell_id], job.steps,
                                                         job.warmup, job.mode))
        print("%d cells" % len(jobs))
        return EXIT_OK
    cache = ArtifactCache(args.cache)
    target = _target(args, cache)
    done = set()
    if args.resume:
        path = (_latest_journal(args.results, args.target, plan_name) if args.resume == "latest"
                else Path(args.resume))
        records, problems = read_journal(path)
        for problem in problems:
            log.warning("%s", problem)
        done = {r["cell_id"] for r in records if r["status"] == "ok" and r["target"] == args.target}
    else:
        path = new_journal_path(args.results, args.target, plan_name)
    target.open()
    try:
        summary = Runner(target, cache, Journal(path), path.stem, plan_name,
                         retries=args.retries).run(jobs, done)
    finally:
        target.close()
        _export_after_run(path)
    log.info("%d ok, %d failed, %d already done; journal: %s", summary.ok, summary.failed,
             summary.skipped, path)
    if args.report:
        _render([path], args.report)
    return EXIT_CELLS_FAILED if summary.failed else EXIT_OK


def _export_after_run(journal):
    """The pytest-benchmark file of a run, written even when the run was interrupted."""
    from .export import ExportError, export_journal

    if not journal.is_file():
        return
    try:
        log.info("pytest-benchmark file: %s", export_journal(journal))
    except ExportError as exc:
        log.warning("no pytest-benchmark file: %s", exc)


def cmd_export(args):
    from .export import export_journal

    for journal in args.journals:
        print(export_journal(Path(journal), args.storage))
    return EXIT_OK


def cmd_list(args):
    if args.what == "models":
        from suites import models

        for name in models.names():
            spec = models.spec(name)
            presets = ", ".join(models.sparse_update_schemes(name)) or "none"
            source = models.published_counts(name).get("paper", "none (a micro-benchmark)")
            print("%-20s %s convs; published: %s; sparse-update presets: %s"
                  % (name, spec["n_convs"], source, presets))
    elif args.what == "methods":
        names = registry.names(registry.METHODS)
        width = max(map(len, names))
        for name in names:
            method = registry.load(registry.METHODS, name)
            params = ", ".join("%s (%s)" % (p, kind.__name__) for p, (kind, _) in method.params.items())
            print("%-*s %s%s" % (width, name, method.description, "; parameters: " + params if params else ""))
    elif args.what == "plans":
        for name in plan_names():
            plan = load_plan(name)
            print("%-10s %3d cells  %s" % (name, len(plan.jobs), " ".join(plan.description.split())))
    else:
        for name in registry.names(registry.TARGETS):
            cls = registry.load(registry.TARGETS, name)
            doc = (cls.__doc__ or "").strip().splitlines()
            kind = "kind, described in the targets file" if getattr(cls, "needs_description", False) else "built in"
            print("%-14s %s: %s" % (name, kind, doc[0] if doc else ""))
        path = Path(_targets_file(args))
        if path.is_file():
            from targets.config import load_targets

            try:
                described = load_targets(path)
            except ValueError as exc:
                raise UsageError(str(exc))
            for name, host in sorted(described.items()):
                print("%-14s %s target in %s: %s" % (name, host.kind, path, host.host))
    return EXIT_OK


def _render(paths, out_dir):
    from .report import render
    from .results import cell_tables, load, long_table

    records, problems = load(paths)
    for problem in problems:
        log.warning("%s", problem)
    if not records:
        raise UsageError("no valid records in %s" % ", ".join(map(str, paths)))
    report = render(long_table(records), Path(out_dir), [str(p) for p in paths], cell_tables(records))
    log.info("report: %s", report)
    return report


def cmd_report(args):
    _render(args.journals, args.output)
    return EXIT_OK


def cmd_analyze(args):
    from .analysis import analyze
    from .compile import compile_job

    (job,) = _adhoc_jobs(args)
    cache = ArtifactCache(args.cache)
    plan = compile_job(job, cache)
    if plan["selection"]:  # a plan chosen from the data (TinyTrain): choose it here, as the device would
        from .executor import Execution

        log.info("%s chooses its plan from the support set: running its selection on this host", job.method)
        selection = Execution(plan, str(cache.objects), time.perf_counter_ns).select_plan(lambda message: None)
        plan = dict(plan, update_plan=selection["update_plan"])
    result = analyze(plan)
    out = {"model": job.model, "method": job.method, "method_params": job.method_params,
           "resolution": job.resolution, "batch": job.batch}
    for name, fig in result.items():
        out[name] = ({k: v.to_json() for k, v in fig.items()} if isinstance(fig, dict)
                     else fig.to_json())
    if args.json:
        print(json.dumps(out, indent=2, sort_keys=True))
    else:
        print("\n".join(_analysis_lines(job, plan["update_plan"], result)))
    return EXIT_OK


def _figure_value(fig):
    if fig.value is None:
        return "—"
    return "{:,.0f}".format(fig.value) if float(fig.value).is_integer() else "{:,.4g}".format(fig.value)


def _analysis_lines(job, update_plan, result):
    """``analyze``'s figures for people: the cell, what its plan updates, then one line per figure
    (dotted name, value, unit, source, per what, and how it was obtained or why it is missing)."""
    params = ",".join("%s=%s" % kv for kv in sorted(job.method_params.items()))
    lines = ["%s · %s%s · %d px · batch %d · ops %s" % (job.model, job.method, "(%s)" % params if params else "",
                                                         job.resolution, job.batch, job.ops)]
    updated = [layer for layer in update_plan["layers"] if layer["update"] != "frozen"]
    kinds = Counter(layer["update"] for layer in updated)
    every = len(updated) == len(update_plan["layers"])
    lines.append("updates %s layers (%s; BN %s)%s" % (
        "all %d" % len(updated) if every else "%d of %d" % (len(updated), len(update_plan["layers"])),
        ", ".join("%s ×%d" % kv for kv in sorted(kinds.items())), update_plan["bn"],
        "" if every else ": " + ", ".join(layer["name"] for layer in updated)))
    figures = []
    for name, fig in sorted(result.items()):
        figures += sorted((name + "." + k, v) for k, v in fig.items()) if isinstance(fig, dict) else [(name, fig)]
    width = max(len(name) for name, _ in figures)
    for name, fig in figures:
        note = fig.reason or fig.how
        lines.append("%-*s %15s %-5s  %s, per %s%s" % (width, name, _figure_value(fig), fig.unit, fig.source.value,
                                                      fig.per, "; " + note if note else ""))
    return lines


def cmd_doctor(args):
    target = _target(args, None)
    try:
        results = target.doctor()
    except TargetError as exc:
        print("odt-bench: error: doctor %r: %s" % (args.target, exc), file=sys.stderr)
        return EXIT_CELLS_FAILED
    print("doctor: %s" % args.target)
    for check in results:
        print(check.line())
    bad = [c.name for c in results if c.status == "FAIL"]
    print("not ready: %s" % ", ".join(bad) if bad else "ready")
    return EXIT_CELLS_FAILED if bad else EXIT_OK


def cmd_pretrain(args):
    from .pretrain import pretrain

    from suites import models

    models.spec(args.model)
    print(pretrain(args.model, args.resolution, ArtifactCache(args.cache), epochs=args.epochs))
    return EXIT_OK


def cmd_meta_train(args):
    from suites import models

    if args.episodes < 1:
        raise UsageError("--episodes must be at least 1, got %d" % args.episodes)
    models.spec(args.model)
    print(meta_train(args.model, args.resolution, ArtifactCache(args.cache), episodes=args.episodes))
    return EXIT_OK


def cmd_search_sparse(args):
    from suites import models
    from suites.counts import Int8Memory
    from suites.methods.sparse_update import PRESET_FORMAT
    from suites.quantities import parse_bytes

    from .cache import sha256_bytes
    from .contributions import Analysis, cached_table, load_table
    from .sparse_search import Search

    spec = models.spec(args.model)
    try:
        budget = parse_bytes(args.budget, "--budget")
    except ValueError as exc:
        raise UsageError(str(exc))
    memory = Int8Memory.of(spec, 10, args.memory_resolution)
    smallest = memory.scheme_bytes(0, {})
    if budget < smallest:
        raise UsageError("--budget %s (%d B) is below the %d B that training %s's classifier alone needs at %d px "
                         "(its input at 8 bits per element)" % (args.budget, budget, smallest, args.model,
                                                                 args.memory_resolution))
    cache = ArtifactCache(args.cache)
    if args.table:
        try:
            table = json.loads(Path(args.table).read_text())
        except (OSError, ValueError) as exc:
            raise UsageError("--table %s cannot be read as JSON: %s" % (args.table, exc))
    else:
        analysis = Analysis(args.model, cache, resolution=args.resolution, batch=args.batch, steps=args.steps,
                            lr=args.lr, seeds=args.seeds, data=args.data)
        table = cached_table(analysis, cache)
    try:
        contributions, recipe = load_table(table, args.table or "the cached contribution table")
    except ValueError as exc:
        raise UsageError(str(exc))
    if recipe.get("model", args.model) != args.model:
        raise UsageError("--table %s was measured on %s, not %s" % (args.table, recipe.get("model"), args.model))
    started = time.monotonic()
    search = Search(memory, contributions, budget, seed=args.seed)
    best = search.run(population=args.population, evaluations=args.evaluations)
    seconds = time.monotonic() - started
    table_bytes = json.dumps(table, indent=1, sort_keys=True).encode()
    out = Path(args.output or "results/presets/%s-%s.json" % (args.model, args.budget))
    preset = dict({"format": PRESET_FORMAT, "version": 1, "model": args.model}, **search.scheme(best))
    preset.update({"budget_bytes": budget, "sparseupdate_int8_bytes": best.bytes,
                   "memory_resolution": args.memory_resolution, "summed_contribution": best.score,
                   "search": {"population": args.population, "evaluated": search.evaluated, "seed": args.seed,
                              "seconds": round(seconds, 3)},
                   "contributions": {"sha256": sha256_bytes(table_bytes), "recipe": recipe}})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(preset, indent=1) + "\n")
    table_out = out.with_name(out.stem + ".contributions.json")
    table_out.write_bytes(table_bytes)
    log.info("searched %d candidates in %.1f s: summed contribution %.4f at %d B of %d B", search.evaluated,
             seconds, best.score, best.bytes, budget)
    for label, scheme in models.sparse_update_schemes(args.model).items():
        released = search.score_of(scheme)
        if released is not None:
            log.info("  released preset %s on this table: summed contribution %.4f at %d B", label,
                     released.score, released.bytes)
    print(out)
    log.info("contribution table: %s (reuse with --table)", table_out)
    return EXIT_OK


def build_parser():
    summary, exit_codes = (" ".join(part.split()) for part in __doc__.strip().split("\n\n"))
    parser = argparse.ArgumentParser(prog="odt-bench", description=summary, epilog=exit_codes)
    parser.add_argument("--cache", help="artifact cache directory (default $ODT_BENCH_CACHE or "
                                        "~/.cache/odt-bench)")
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, text):  # the one-line summary in `odt-bench --help` and atop the command's own help
        return sub.add_parser(name, help=text, description=text)

    run = command("run", "run a plan (or one cell) on a target")
    run.add_argument("--plan", default="default", help="plan name (%s) or TOML path" % ", ".join(plan_names()))
    run.add_argument("--target", default="local", help="target name: local, or one of the targets file")
    run.add_argument("--targets", help="targets file (default $%s, else ./targets.toml)" % TARGETS_ENV)
    run.add_argument("--results", default="results", help="results directory (default: results)")
    run.add_argument("--resume", nargs="?", const="latest", metavar="JOURNAL",
                     help="continue a journal (default: the plan's latest), skipping finished cells")
    run.add_argument("--dry-run", action="store_true", help="list the cells and stop")
    run.add_argument("--report", metavar="DIR", help="render a report of this run into DIR")
    run.add_argument("--set", dest="overrides", action="append", metavar="KEY=VALUE",
                     help="override a job field in every cell (e.g. steps=10, resolution=[64,128]) or a "
                          "method parameter (bp-last-k.k=4); repeatable")
    run.add_argument("-k", dest="keyword", metavar="EXPR",
                     help="run only cells whose names match, as pytest -k: 'bias-only or last-layer'")
    run.add_argument("--retries", type=int, default=DEFAULT_RETRIES, metavar="N",
                     help="retry a cell that timed out, crashed, lost its connection or ran on an "
                          "unhealthy device up to N times; every attempt is journaled, the latest "
                          "wins (default %d)" % DEFAULT_RETRIES)
    _add_cell_flags(run)
    run.set_defaults(func=cmd_run)

    analyze = command("analyze", "counts and saved bytes of one cell (no timing)")
    _add_cell_flags(analyze)
    analyze.add_argument("--json", action="store_true", help="print one JSON object")
    analyze.set_defaults(func=cmd_analyze)

    report = command("report", "render a report from journals")
    report.add_argument("journals", nargs="+", help="journal files or directories")
    report.add_argument("-o", "--output", required=True, help="output directory")
    report.set_defaults(func=cmd_report)

    export = command("export", "write a new pytest-benchmark JSON file from journals")
    export.add_argument("journals", nargs="+", help="journal files (.jsonl)")
    export.add_argument("--storage", help="pytest-benchmark storage directory (default: the journal's "
                                          "directory, results/<target>/)")
    export.set_defaults(func=cmd_export)

    listing = command("list", "list models, methods, plans or targets")
    listing.add_argument("what", choices=("models", "methods", "plans", "targets"))
    listing.add_argument("--targets", help="targets file (default $%s, else ./targets.toml)" % TARGETS_ENV)
    listing.set_defaults(func=cmd_list)

    doc = command("doctor", "check that a target is ready (Python, torch, memory, disk, governor, clocks, "
                            "board tools)")
    doc.add_argument("--target", default="local", help="target name: local, or one of the targets file")
    doc.add_argument("--targets", help="targets file (default $%s, else ./targets.toml)" % TARGETS_ENV)
    doc.set_defaults(func=cmd_doctor)

    search = command("search-sparse", "contribution analysis + evolutionary search for a SparseUpdate scheme "
                                      "under a memory budget; writes a preset file")
    search.add_argument("--model", required=True, help="model name (odt-bench list models)")
    search.add_argument("--budget", required=True, help="memory budget with its unit, e.g. 100KiB or 0.1MB "
                                                        "(sparseupdate_int8 convention, per sample)")
    search.add_argument("--data", default="mnist5k-transfer", help="the transfer task the contributions are "
                                                                   "measured on (default mnist5k-transfer)")
    search.add_argument("--table", help="a contribution table (JSON) to search on instead of measuring one")
    search.add_argument("--resolution", type=int, default=64, help="input size of the fine-tuning runs (default 64)")
    search.add_argument("--memory-resolution", type=int, default=128,
                        help="input size at which memory is counted (default 128, the presets')")
    search.add_argument("--batch", type=int, default=16, help="fine-tuning batch (default 16)")
    search.add_argument("--steps", type=int, default=100, help="SGD steps per fine-tuning run (default 100)")
    search.add_argument("--lr", type=float, default=0.1, help="fine-tuning learning rate (default 0.1)")
    search.add_argument("--seeds", type=int, default=1, help="fine-tuning runs averaged per configuration")
    search.add_argument("--population", type=int, default=100, help="candidates per generation (default 100)")
    search.add_argument("--evaluations", type=int, default=5000, help="candidates to evaluate (default 5000)")
    search.add_argument("--seed", type=int, default=0, help="the search's random seed")
    search.add_argument("-o", "--output", help="preset file (default results/presets/<model>-<budget>.json)")
    search.set_defaults(func=cmd_search_sparse)

    pre = command("pretrain", "pre-train a backbone on the source classes (cached)")
    pre.add_argument("--model", required=True, help="model name (odt-bench list models)")
    pre.add_argument("--resolution", type=int, default=64, help="input size (default 64)")
    pre.add_argument("--epochs", type=int, default=4, help="epochs over the source classes (default 4)")
    pre.set_defaults(func=cmd_pretrain)

    meta = command("meta-train", "meta-train the pre-trained backbone episodically (ProtoNet; cached); jobs "
                                 "use it with checkpoint = \"meta-trained\"")
    meta.add_argument("--model", required=True, help="model name (odt-bench list models)")
    meta.add_argument("--resolution", type=int, default=64, help="input size (default 64)")
    meta.add_argument("--episodes", type=int, default=EPISODES, help="episodes of %s (default %d)" % (PROTOCOL, EPISODES))
    meta.set_defaults(func=cmd_meta_train)
    return parser


def main(argv=None):
    _setup_logging()
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UsageError, PlanError, JobError, JournalError, KeywordError, KeyError) as exc:
        print("odt-bench: error: %s" % (exc.args[0] if isinstance(exc, KeyError) else exc),
              file=sys.stderr)
        return EXIT_USAGE
    except TargetError as exc:
        print("odt-bench: error: target %r: %s\n%s" % (args.target, exc, exc.detail), file=sys.stderr)
        return EXIT_CELLS_FAILED
    except KeyboardInterrupt:
        print("odt-bench: interrupted; finished cells are in the journal", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # stdout's reader went away (`odt-bench run --dry-run | head`): stop quietly with a shell's
        # status for SIGPIPE (128 + 13), and keep Python's flush at exit from raising again
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_PIPE_CLOSED


if __name__ == "__main__":
    sys.exit(main())
