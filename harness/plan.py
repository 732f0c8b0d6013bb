"""Benchmark plans: TOML files in ``suites/plans/`` expanded into Jobs (cells).

Grammar (every key is checked; an unknown one is an error naming the file and key)::

    name = "quick"                 # optional, defaults to the file name
    description = "..."            # optional

    [defaults]                     # job fields for every cell (see ``Job``)
    steps = 10

    [methods.bp-last-k]            # parameters of a method, wherever that method appears;
    k = [2, 6]                     # a list is one more axis of the product

    [[cells]]                      # a block: the product of its list-valued fields;
    model = ["mbv2-w0.35", "mcunet-5fps"]   # scalars apply to every cell of the block
    method = ["full", "bias-only"]
    resolution = 128

    [cells.methods.bp-last-k]      # method parameters for this block only (replacing the
    k = 4                          # top-level table's for that method)

A cell's fields: its block's, else ``[defaults]``, else the Job's own defaults. Overrides from the
command line (``--set key=value``) replace a job field in every block (a TOML list value is an
axis), or a method parameter with ``--set METHOD.PARAM=value``.
"""
import itertools
import tomllib
from dataclasses import dataclass, fields
from pathlib import Path

from suites import models
from suites.data import NAMES as DATA_NAMES, episode_mismatch, known as known_data
from suites.data.episodes import EpisodeError, parse_protocol

from . import registry
from .job import Job, JobError

PLANS_DIR = Path(__file__).resolve().parent.parent / "suites" / "plans"
JOB_FIELDS = {f.name for f in fields(Job)} - {"method_params"}
TOP_KEYS = {"name", "description", "defaults", "methods", "cells"}


class PlanError(ValueError):
    pass


@dataclass(frozen=True)
class Plan:
    name: str
    description: str
    path: str
    jobs: tuple


def resolve(name_or_path) -> Path:
    """A plan name (``quick``) from suites/plans, or a path to a TOML file."""
    path = Path(name_or_path)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise PlanError("plan file %s does not exist" % path)
        return path
    path = PLANS_DIR / (str(name_or_path) + ".toml")
    if not path.is_file():
        raise PlanError("unknown plan %r; known plans: %s" % (name_or_path, ", ".join(plan_names())))
    return path


def plan_names():
    return sorted(p.stem for p in PLANS_DIR.glob("*.toml"))


def _check_keys(where, table, allowed):
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise PlanError("%s: unknown key %r; allowed: %s" % (where, unknown[0], ", ".join(sorted(allowed))))


def _check_names(where, job):
    try:
        models.spec(job.model)
        registry.method_with_params(job.method, job.method_params)
    except (KeyError, JobError) as exc:
        raise PlanError("%s: %s" % (where, exc))
    if not known_data(job.data):
        raise PlanError("%s: unknown data %r; known: %s" % (where, job.data, ", ".join(DATA_NAMES)))
    mismatch = episode_mismatch(job.data, job.episode)
    if mismatch:
        raise PlanError("%s: %s" % (where, mismatch))
    if job.episode:
        try:
            parse_protocol(job.episode)
        except EpisodeError as exc:
            raise PlanError("%s: %s" % (where, exc))


def _product(table):
    """Every combination of a table's values, lists being axes and scalars fixed."""
    axes = {k: (v if isinstance(v, list) else [v]) for k, v in table.items()}
    return [dict(zip(axes, values)) for values in itertools.product(*axes.values())]


def jobs_from(doc, where="plan", numbered=True):
    """Expand a parsed plan document into Jobs, validating every key and name. Errors start with
    ``where`` and, if ``numbered``, the block (``[[cells]] #2``)."""
    _check_keys(where, doc, TOP_KEYS)
    defaults = doc.get("defaults", {})
    _check_keys(where + " [defaults]", defaults, JOB_FIELDS)
    method_params = doc.get("methods", {})
    jobs, seen = [], set()
    for i, block in enumerate(doc.get("cells", [])):
        here = "%s [[cells]] #%d" % (where, i + 1) if numbered else where
        block = dict(block)
        block_params = dict(method_params, **block.pop("methods", {}))
        _check_keys(here, block, JOB_FIELDS)
        merged = dict(defaults, **block)
        for key in ("model", "method"):
            if key not in merged:
                raise PlanError("%s: no %r given (in the block or [defaults])" % (here, key))
        axes = merged
        for cell in _product(axes):
            for params in _product(block_params.get(cell["method"], {})):
                try:
                    job = Job(method_params=params, **cell)
                except (JobError, TypeError) as exc:
                    raise PlanError("%s: %s" % (here, exc))
                _check_names(here, job)
                if job.cell_id not in seen:
                    seen.add(job.cell_id)
                    jobs.append(job)
    if not jobs:
        raise PlanError("%s: the plan has no cells (add a [[cells]] block)" % where)
    return jobs


def parse_overrides(items):
    """``["steps=10", "resolution=[64, 128]"]`` -> ``{"steps": 10, "resolution": [64, 128]}``;
    values are TOML when they parse as TOML, else plain strings."""
    out = {}
    for item in items or ():
        key, sep, raw = item.partition("=")
        if not sep or not key.strip():
            raise PlanError("--set %r: expected KEY=VALUE, e.g. --set steps=10" % item)
        try:
            value = tomllib.loads("v = " + raw)["v"]
        except tomllib.TOMLDecodeError:
            value = raw.strip()
        out[key.strip()] = value
    return out


def apply_overrides(doc, overrides):
    """A copy of the plan document ``doc`` with ``overrides`` (from ``parse_overrides``) applied."""
    def copy_methods(table):
        return {k: dict(v) for k, v in table.items()}

    doc = dict(doc, methods=copy_methods(doc.get("methods", {})),
               cells=[dict(block, **({"methods": copy_methods(block["methods"])} if "methods" in block else {}))
                      for block in doc.get("cells", [])])
    for key, value in overrides.items():
        method, dot, param = key.rpartition(".")
        if dot:
            if method not in registry.names(registry.METHODS):
                raise PlanError("--set %s: unknown method %r; known: %s"
                                % (key, method, ", ".join(registry.names(registry.METHODS))))
            for table in [doc["methods"]] + [b["methods"] for b in doc["cells"] if method in b.get("methods", {})]:
                table.setdefault(method, {})[param] = value
        elif key in JOB_FIELDS:
            for block in doc["cells"]:
                block[key] = value
        else:
            raise PlanError("--set %s: unknown key; give a job field (%s) or METHOD.PARAM"
                            % (key, ", ".join(sorted(JOB_FIELDS))))
    return doc


def load_plan(name_or_path, overrides=None) -> Plan:
    path = resolve(name_or_path)
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise PlanError("plan file %s is not valid TOML: %s" % (path, exc))
    if overrides:
        doc = apply_overrides(doc, overrides)
    return Plan(name=doc.get("name", path.stem), description=doc.get("description", ""),
                path=str(path), jobs=tuple(jobs_from(doc, str(path))))
