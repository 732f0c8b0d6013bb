"""The device-side version floor (harness/floor.py): vermin over the bundle, the API table, and the
refusal of a stack below the floor.

No board is attached here, so old device stacks are played by stand-in interpreters: shell scripts
that run this Python with a ``sitecustomize`` faking ``sys.version_info`` or with a fake ``torch``
package shadowing the real one. Where real old interpreters happen to be installed (pyenv), they
are used too; those tests skip elsewhere.
"""
import glob
import os
import re
import shutil
import subprocess
import sys
import textwrap
import time

import pytest
import torch

from harness import floor
from harness.bundle import DEVICE_FILES, ROOT
from tests.helpers import stand_in_python

VERMIN = [sys.executable, "-c", "import sys, vermin; sys.exit(vermin.main())"]
# --eval-annotations: the device files do not use `from __future__ import annotations`, so their
# annotations are evaluated when defined (`list[int]` fails on 3.8); union-types catches `X | Y`.
VERMIN_FLAGS = ["--violations", "--no-tips", "--no-parse-comments", "--no-config-file",
                "--eval-annotations", "--feature", "union-types", "--processes=1"]
DEVICE_PY = [rel for rel in DEVICE_FILES if rel.endswith(".py")]


def vermin(targets, *paths):
    cmd = VERMIN + ["-t=%s-" % t for t in targets] + VERMIN_FLAGS + [str(p) for p in paths]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


# -- vermin: the files really keep to the floor ----------------------------------------------------

@pytest.mark.parametrize("rel", DEVICE_PY)
def test_device_file_keeps_to_the_python_floor(rel):
    path = ROOT / rel
    if not path.exists():
        pytest.skip("%s is listed in DEVICE_FILES but not written yet" % rel)
    result = vermin(["3.8"], path)
    assert result.returncode == 0, "vermin -t=3.8- finds violations in %s:\n%s%s" % (
        rel, result.stdout, result.stderr)


def test_floor_module_parses_on_old_interpreters():
    """floor.py must give an old device its message, not a SyntaxError: 3.5 (and 2.7) clean."""
    result = vermin(["2.7", "3.5"], ROOT / "harness" / "floor.py")
    assert result.returncode == 0, result.stdout + result.stderr


def test_vermin_flags_catch_violations(tmp_path):
    """The flags above do report what a 3.8 device cannot run (else the tests above prove nothing)."""
    bad = tmp_path / "bad.py"
    bad.write_text('def f(x: list[int]) -> int | None:\n    return None\n\ny = "ab".removeprefix("a")\n')
    result = vermin(["3.8"], bad)
    assert result.returncode == 1
    assert "removeprefix" in result.stdout and "list[..]" in result.stdout and "X | Y" in result.stdout
    old = tmp_path / "old.py"
    old.write_text('x = 1\nprint(f"{x}")\n')
    assert vermin(["3.5"], old).returncode == 1


# -- the table and the current stack ---------------------------------------------------------------

def test_current_stack_has_no_problems():
    assert floor.problems() == []


@pytest.mark.parametrize("api", floor.TORCH_APIS, ids=lambda api: api.name)
def test_every_api_is_present_on_the_current_stack(api):
    assert api.check() is True


def test_floor_covers_every_api_in_the_table():
    for api in floor.TORCH_APIS:
        assert api.package in ("torch", "python"), api
        limit = floor.TORCH_FLOOR if api.package == "torch" else floor.PYTHON_FLOOR
        assert api.minimum <= limit, "%s needs %s, above the %s floor %s" % (
            api.name, api.minimum, api.package, limit)
        for rel in api.used_in:
            assert rel in DEVICE_FILES, (api.name, rel)
    assert floor.PYTHON_FLOOR == (3, 8) and floor.TORCH_FLOOR == (1, 13)
    # the floor is set by the newest API: torch 1.13 by weights_only, Python 3.7 by perf_counter_ns
    newest = max(api.minimum for api in floor.TORCH_APIS if api.package == "torch")
    assert newest == floor.TORCH_FLOOR


def test_table_names_what_the_device_files_use():
    """Each API the table names really appears in the files it names (no stale entries)."""
    spelled = {
        "torch.load(weights_only=True)": "weights_only=True",
        "Optimizer.zero_grad(set_to_none=...)": "zero_grad(set_to_none=",
        "torch.nn.Identity": "nn.Identity",
        "torch.__config__.show": "torch.__config__.show()",
        "torch.__config__.parallel_info": "torch.__config__.parallel_info()",
        "Tensor.mean(dim=(2, 3))": ".mean((2, 3))",
        "torch.Generator().manual_seed(seed) -> Generator": "torch.Generator().manual_seed(",
        "torch.randn/randint/randperm(generator=...)": "generator=self.generator",
        "torch.nn.functional.interpolate(mode='bilinear', align_corners=...)": "align_corners=",
        "@torch.no_grad()": "@torch.no_grad()",
        "time.perf_counter_ns": "time.perf_counter_ns",
        "time.monotonic_ns": "time.monotonic_ns",
    }
    assert sorted(spelled) == sorted(api.name for api in floor.TORCH_APIS)
    for api in floor.TORCH_APIS:
        for rel in api.used_in:
            if (ROOT / rel).exists():  # a listed device file may not be written yet
                assert spelled[api.name] in (ROOT / rel).read_text(), (api.name, rel)


def test_docs_table_matches_the_api_table():
    """docs/devices.md writes TORCH_APIS out by hand: same names, same minima."""
    lines = (ROOT / "docs" / "devices.md").read_text().splitlines()
    for api in floor.TORCH_APIS:
        rows = [line for line in lines if line.startswith("| `%s`" % api.name)]
        assert len(rows) == 1, "docs/devices.md has no single table row for %s" % api.name
        assert "| %s |" % floor.since(api) in rows[0], (api.name, floor.since(api), rows[0])
    assert "**3.8**" in "\n".join(lines) and "**1.13**" in "\n".join(lines)


@pytest.mark.parametrize("text, expected", [
    ("2.13.0+cpu", (2, 13, 0)),
    ("1.10.0a0+git36449ea", (1, 10, 0)),
    ("1.13.1", (1, 13, 1)),
    ("1.13.0a0+d0d6b1f2.nv22.10", (1, 13, 0)),
    ("1.13", (1, 13, 0)),
    ("2.1.0.dev20230801", (2, 1, 0)),
    ("unknown", None),
    ("", None),
    (None, None),
])
def test_parse_version(text, expected):
    assert floor.parse_version(text) == expected


def test_parse_version_of_the_installed_torch():
    assert floor.parse_version(torch.__version__)[:2] >= floor.TORCH_FLOOR


def test_main_reports_ok(capsys):
    assert floor.main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("device stack OK: Python %d.%d.%d, torch %s"
                          % (sys.version_info[:3] + (torch.__version__,)))


# -- one missing API at a time, on the real torch: the message names exactly that API -------------

def _old_load(f, map_location=None, pickle_module=None, **pickle_load_args):
    """torch.load as torch 1.10 declares it: no weights_only parameter."""
    raise TypeError("weights_only is not a parameter of this torch.load")


def _old_zero_grad(self):
    """Optimizer.zero_grad as torch 1.6 declares it: no set_to_none."""


@pytest.mark.parametrize("remove, name", [
    (lambda mp: mp.setattr(torch, "load", _old_load), "torch.load(weights_only=True)"),
    (lambda mp: mp.setattr(torch.optim.Optimizer, "zero_grad", _old_zero_grad),
     "Optimizer.zero_grad(set_to_none=...)"),
    (lambda mp: mp.delattr(torch.nn, "Identity"), "torch.nn.Identity"),
    (lambda mp: mp.delattr(torch.__config__, "parallel_info"), "torch.__config__.parallel_info"),
    (lambda mp: mp.delattr(time, "perf_counter_ns"), "time.perf_counter_ns"),
], ids=["load-weights_only", "zero_grad-set_to_none", "nn.Identity", "parallel_info",
        "perf_counter_ns"])
def test_a_missing_api_is_named_alone(monkeypatch, remove, name):
    with monkeypatch.context() as mp:
        remove(mp)
        found = floor.problems()
    assert len(found) == 1, found
    assert " lacks %s (in " % name in found[0]
    if name != "time.perf_counter_ns":
        # torch 2.13 meets the version floor, so the message says the build is odd
        assert "meets the version floor" in found[0]


# -- the refusal, through stand-in interpreters ---------------------------------------------------

def _stand_in(tmp_path, files):
    """A stand-in device ``python``: this interpreter with ``files`` first on its path."""
    fake = tmp_path / "stand-in"
    for rel, text in files.items():
        path = fake / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    return stand_in_python(tmp_path, 'PYTHONPATH="%s" exec "%s" "$@"' % (fake, sys.executable))


def _doctor(python):
    """``python -m harness.floor`` from the repository root, the way the remote doctor runs it."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    result = subprocess.run([python, "-m", "harness.floor"], cwd=str(ROOT), env=env,
                            capture_output=True, text=True, timeout=300)
    return result.returncode, result.stdout + result.stderr


FAKE_PY36 = """
    import collections
    import sys

    sys.version_info = collections.namedtuple(
        "version_info", "major minor micro releaselevel serial")(3, 6, 9, "final", 0)
"""


def test_stand_in_python_36_is_refused(tmp_path):
    rc, out = _doctor(_stand_in(tmp_path, {"sitecustomize.py": FAKE_PY36}))
    assert rc == 1, out
    assert out.startswith("device stack NOT OK (Python 3.6.9, "), out
    assert ("- Python 3.6.9 is below the device floor 3.8: install Python 3.8+ and point the "
            "target's python at it") in out
    assert "see docs/devices.md" in out


def test_stand_in_torch_110_is_refused(tmp_path):
    rc, out = _doctor(_stand_in(tmp_path, {"torch/__init__.py": '__version__ = "1.10.0"\n'}))
    assert rc == 1, out
    assert out.startswith("device stack NOT OK (Python %d.%d.%d, torch 1.10.0):"
                          % sys.version_info[:3]), out
    assert re.search(r"- torch 1\.10\.0 is below the device floor 1\.13 \(imported from \S+"
                     r"stand-in/torch/__init__\.py\): install torch >= 1\.13 for this Python", out), out
    assert "- torch 1.10.0 lacks torch.load(weights_only=True) (in torch since 1.13)" in out
    assert "below the device floor 3.8" not in out


def test_stand_in_without_torch_is_refused(tmp_path):
    body = 'raise ImportError("No module named torch")\n'
    rc, out = _doctor(_stand_in(tmp_path, {"torch/__init__.py": body}))
    assert rc == 1, out
    assert "torch not importable" in out.splitlines()[0]
    assert ("- torch is not installed on the device (No module named torch): install torch >= 1.13 "
            "for this Python") in out
    assert len([line for line in out.splitlines() if line.startswith("  - ")]) == 1, out


def test_stand_in_with_a_broken_torch_is_refused(tmp_path):
    body = 'raise RuntimeError("module compiled against API version 0x10 but this numpy is 0xe")\n'
    rc, out = _doctor(_stand_in(tmp_path, {"torch/__init__.py": body}))
    assert rc == 1, out
    assert "- torch is installed but cannot be imported (RuntimeError: module compiled against" in out
    assert "not installed" not in out


def test_stand_in_of_the_current_stack_passes(tmp_path):
    """The same stand-in route with nothing faked passes: the refusals above are not the route's."""
    rc, out = _doctor(_stand_in(tmp_path, {"empty.py": ""}))
    assert (rc, out) == (0, "device stack OK: Python %d.%d.%d, torch %s\n"
                         % (sys.version_info[:3] + (torch.__version__,))), out


# -- real old interpreters, where this machine has them --------------------------------------------

def _interpreter(major, minor):
    """A real ``pythonX.Y`` on PATH or under ~/.pyenv/versions, checked by running it; else None."""
    name = "python%d.%d" % (major, minor)
    candidates = [shutil.which(name)] + sorted(
        glob.glob(os.path.expanduser("~/.pyenv/versions/%d.%d.*/bin/%s" % (major, minor, name))))
    for path in candidates:
        if not path:
            continue
        try:
            out = subprocess.run([path, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                                 capture_output=True, text=True, timeout=30)
        except OSError:
            continue
        if out.returncode == 0 and out.stdout.strip() == "%d.%d" % (major, minor):
            return path
    return None


@pytest.mark.parametrize("major, minor", [(2, 7), (3, 6), (3, 7)])
def test_real_old_python_is_refused(major, minor):
    python = _interpreter(major, minor)
    if python is None:
        pytest.skip("no real Python %d.%d here; the stand-in tests cover the refusal" % (major, minor))
    rc, out = _doctor(python)
    assert rc == 1, out
    assert re.search(r"- Python %d\.%d\.\d+ is below the device floor 3\.8: install Python 3\.8\+"
                     % (major, minor), out), out
    assert "Traceback" not in out and "SyntaxError" not in out


def test_device_files_compile_on_a_real_python_38():
    python = _interpreter(3, 8)
    if python is None:
        pytest.skip("no real Python 3.8 here; vermin covers the device files")
    paths = [str(ROOT / rel) for rel in DEVICE_PY if (ROOT / rel).exists()]
    script = ("import sys\nfor p in sys.argv[1:]:\n"
              "    compile(open(p, 'rb').read(), p, 'exec', dont_inherit=True)\n")
    result = subprocess.run([python, "-c", script] + paths, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
