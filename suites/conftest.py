"""The pytest front end: ``pytest suites --target local --plan quick``.

Each cell of the plan is one test, ``test_cell[<cell name>]`` (so ``-k`` selects cells by the same
names as ``odt-bench run -k``). Cells run through the same ``Runner`` and journal as
``odt-bench run`` — there is no second execution path — and the journal gets its pytest-benchmark
file at the end of the session, interrupted or not. pytest-benchmark then receives the
device-measured step times through a replay clock (``suites/test_benchmarks.py``), the device's
fingerprint as ``machine_info``, and ``results/<target>/`` as its storage, so
``--benchmark-compare`` and ``pytest-benchmark compare`` see the harness's files.
"""
import pytest

from harness import export, registry
from harness.cache import ArtifactCache
from harness.job import unique_names
from harness.journal import Journal, new_journal_path
from harness.plan import PlanError, load_plan, parse_overrides
from harness.runner import DEFAULT_RETRIES, Runner

DEFAULT_STORAGE = "file://./.benchmarks"


def pytest_addoption(parser):
    group = parser.getgroup("odt-bench", "odt-bench: run a plan's cells as benchmarks")
    group.addoption("--target", default="local", help="target name (default: local)")
    group.addoption("--targets", default=None, help="targets file (default $ODT_BENCH_TARGETS, "
                                                    "else ./targets.toml)")
    group.addoption("--plan", default="quick", help="plan name or TOML path (default: quick)")
    group.addoption("--set", dest="odt_overrides", action="append", metavar="KEY=VALUE",
                    help="override a job field or METHOD.PARAM in every cell (repeatable)")
    group.addoption("--results", default="results", help="results directory (default: results)")
    group.addoption("--retries", type=int, default=DEFAULT_RETRIES,
                    help="retries of a cell that timed out, crashed or lost its connection")


def _storage(config):
    return "file://%s/%s" % (config.getoption("results"), config.getoption("target"))


@pytest.hookimpl(tryfirst=True)
def pytest_configure(config):
    """Load the plan once, so a bad one is a usage error before anything runs; point
    pytest-benchmark's storage at the target's results (before its own, trylast, configure opens it)."""
    try:
        config.odt_plan = load_plan(config.getoption("plan"), parse_overrides(config.getoption("odt_overrides")))
    except PlanError as exc:
        raise pytest.UsageError(str(exc))
    if getattr(config.option, "benchmark_storage", None) == DEFAULT_STORAGE:
        config.option.benchmark_storage = _storage(config)


def pytest_generate_tests(metafunc):
    if "cell" in metafunc.fixturenames:
        jobs = list(metafunc.config.odt_plan.jobs)
        names = unique_names(jobs)
        metafunc.parametrize("cell", jobs, ids=[names[job.cell_id] for job in jobs])


def _targets_file(config):
    import os

    return config.getoption("targets") or os.environ.get("ODT_BENCH_TARGETS") or "targets.toml"


@pytest.fixture(scope="session")
def odt_runner(request):
    """The session's Runner over the selected target, journaling into ``results/<target>/``."""
    config = request.config
    plan = config.odt_plan
    cache = ArtifactCache()
    target_name = config.getoption("target")
    try:
        target = registry.target(target_name, cache, _targets_file(config))
    except (KeyError, ValueError) as exc:
        raise pytest.UsageError(str(exc.args[0] if isinstance(exc, KeyError) else exc))
    path = new_journal_path(config.getoption("results"), target_name, plan.name)
    runner = Runner(target, cache, Journal(path), path.stem, plan.name, retries=config.getoption("retries"))
    target.open()
    try:
        runner.start(plan.jobs)
        config.odt_device = (runner.device, target_name)
        yield runner
    finally:
        target.close()
        if path.is_file():
            config.odt_files = (path, export.export_journal(path))


def pytest_terminal_summary(terminalreporter, config):
    files = getattr(config, "odt_files", None)
    if files:
        terminalreporter.write_line("odt-bench journal: %s" % files[0])
        terminalreporter.write_line("odt-bench pytest-benchmark file: %s" % files[1])


def pytest_benchmark_update_machine_info(config, machine_info):
    """Describe the device the steps ran on, not the host running pytest."""
    device = getattr(config, "odt_device", None)
    if device is not None:
        machine_info.clear()
        machine_info.update(export.machine_info(*device))
