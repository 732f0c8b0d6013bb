"""Targets and methods by name, through entry points (``odt_bench.targets``, ``odt_bench.methods``).

No harness module imports a driver: a new board or method is a package that declares an entry
point. Unknown names raise ``UnknownName`` listing the valid ones.
"""
from importlib.metadata import entry_points
from pathlib import Path

TARGETS = "odt_bench.targets"
METHODS = "odt_bench.methods"


class UnknownName(KeyError):
    def __str__(self):
        return self.args[0]


def names(group):
    return sorted({ep.name for ep in entry_points(group=group)})


def load(group, name):
    """The object registered as ``name`` in ``group``."""
    for ep in entry_points(group=group):
        if ep.name == name:
            return ep.load()
    what = {TARGETS: "target", METHODS: "method"}.get(group, group)
    known = names(group)
    hint = ", ".join(known) if known else "none (is odt-bench installed? pip install -e .)"
    raise UnknownName("unknown %s %r; known %ss: %s" % (what, name, what, hint))


def _file_targets(targets_file):
    """``{name: kind}`` of the targets file, or {} when there is none."""
    import tomllib

    path = Path(targets_file)
    if not path.is_file():
        return {}
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UnknownName("targets file %s is not valid TOML: %s" % (path, exc))
    return {name: table.get("kind") for name, table in doc.get("targets", {}).items()
            if isinstance(table, dict)}


def _describe_hint(name, kinds, targets_file):
    """What to do about a target the targets file does not describe."""
    table = "a [targets.%s] table%s" % (name, ' with kind = "%s"' % name if name in kinds else "")
    if Path(targets_file).is_file():
        return 'To run on a board, describe it in %s of %s (README, "Remote targets")' % (table, targets_file)
    return ('There is no targets file at %s: to run on a board, describe it in %s of a targets file given '
            'with --targets FILE or $ODT_BENCH_TARGETS (README, "Remote targets")' % (targets_file, table))


def target(name, cache, targets_file):
    """The target ``name``: a built-in kind that needs no description (``local``), or a target
    described in the targets file, built by the driver registered for its ``kind``."""
    kinds = names(TARGETS)
    if name in kinds:
        cls = load(TARGETS, name)
        if not getattr(cls, "needs_description", False):
            return cls.from_config(name, cache, targets_file)
    described = _file_targets(targets_file)
    if name not in described:
        usable = [k for k in kinds if not getattr(load(TARGETS, k), "needs_description", False)]
        raise UnknownName("unknown target %r; known targets: %s. %s" % (
            name, ", ".join(usable + ["%s (%s)" % (n, targets_file) for n in sorted(described)]),
            _describe_hint(name, kinds, targets_file)))
    kind = described[name]
    if kind not in kinds:
        raise UnknownName("%s: target %r has kind %r; known kinds: %s"
                          % (targets_file, name, kind, ", ".join(kinds)))
    return load(TARGETS, kind).from_config(name, cache, targets_file)


def method_with_params(name, params):
    """``(method, params)``: the method ``name`` and ``params`` checked against what it declares."""
    from .job import JobError

    method = load(METHODS, name)()
    declared = method.params
    unknown = sorted(set(params) - set(declared))
    if unknown:
        raise JobError("method %r has no parameter %s; its parameters: %s"
                       % (name, ", ".join(map(repr, unknown)), ", ".join(declared) or "none"))
    missing = sorted(set(declared) - set(params))
    if missing:
        raise JobError("method %r needs parameter %r (%s)" % (name, missing[0], declared[missing[0]][1]))
    for key, (kind, _) in declared.items():
        if not isinstance(params[key], kind) or isinstance(params[key], bool):
            raise JobError("method %r parameter %r must be %s, got %r"
                           % (name, key, kind.__name__, params[key]))
    return method, dict(params)
