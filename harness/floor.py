"""The device-side version floor: Python 3.8 and torch 1.13, and a check that names what is missing.

``python -m harness.floor`` prints the problems of this interpreter's stack (or ``device stack
OK: ...``) and exits 1 (or 0); ``problems()`` returns them as messages, each saying what to do.

``TORCH_APIS`` lists every API the device-side files (``harness.bundle.DEVICE_FILES``) use that
is not ancient, with the first release that has it and a small check run against the live
installation. The torch floor is the newest of those minima (``torch.load(weights_only=...)``,
1.13); ``time.perf_counter_ns`` needs Python 3.7, and the floor is 3.8 because 3.7 is end-of-life
and dropped by torch 2.0, while 3.8 runs torch 1.13 to 2.4. See docs/devices.md.

This module must run on the interpreters it refuses (a stock Jetson Nano has Python 3.6, and its
``python`` is 2.7): it keeps to syntax Python 2.7 and 3.5 can parse (no f-strings, annotations,
dataclasses, walrus), checks the Python version before importing torch, and never raises.
"""
from __future__ import print_function

import collections
import re
import sys

PYTHON_FLOOR = (3, 8)
TORCH_FLOOR = (1, 13)
DOCS = "docs/devices.md"

# name: how the device code spells it; package: "torch" or "python"; minimum: the first release
# with it; exact: False where ``minimum`` is only a bound (present by then, first release not
# pinned down); used_in: the device-side files using it; check: True when it is present here.
Api = collections.namedtuple("Api", "name package minimum exact used_in check")


def _parameters(function):
    """The parameter names of ``function`` (``inspect.signature``: Python 3.3+, looked up so that
    this module stays importable on older interpreters)."""
    import inspect

    return getattr(inspect, "signature")(function).parameters


def _torch_load_weights_only():
    import io

    import torch

    if "weights_only" not in _parameters(torch.load):
        return False
    buf = io.BytesIO()
    torch.save({"w": torch.arange(3.0)}, buf)
    buf.seek(0)
    return torch.equal(torch.load(buf, weights_only=True)["w"], torch.arange(3.0))


def _zero_grad_set_to_none():
    import torch

    # by signature: building an optimizer costs ~1 s on torch 2.x (it imports torch._dynamo)
    return "set_to_none" in _parameters(torch.optim.Optimizer.zero_grad)


def _nn_identity():
    import torch

    t = torch.zeros(1)
    return torch.nn.Identity()(t) is t


def _config_show():
    import torch

    return isinstance(torch.__config__.show(), str)


def _config_parallel_info():
    import torch

    return isinstance(torch.__config__.parallel_info(), str)


def _generator_manual_seed():
    import torch

    return isinstance(torch.Generator().manual_seed(0), torch.Generator)


def _sampling_with_generator():
    import torch

    g = torch.Generator().manual_seed(0)
    torch.randn(2, 3, generator=g)
    torch.randint(0, 3, (2,), generator=g)
    return len(torch.randperm(4, generator=g).tolist()) == 4


def _interpolate_align_corners():
    import torch
    import torch.nn.functional as F

    if "align_corners" not in _parameters(F.interpolate):
        return False
    y = F.interpolate(torch.zeros(1, 3, 4, 4), size=(6, 6), mode="bilinear", align_corners=False)
    return tuple(y.shape) == (1, 3, 6, 6)


def _no_grad_decorator():
    import torch

    x = torch.ones(1, requires_grad=True)
    return not torch.no_grad()(lambda: x * 2)().requires_grad


def _mean_over_dims():
    import torch

    return tuple(torch.ones(1, 2, 3, 3).mean((2, 3)).shape) == (1, 2)


def _perf_counter_ns():
    import time

    return isinstance(getattr(time, "perf_counter_ns")(), int)  # looked up: Python 3.7+


def _monotonic_ns():
    import time

    return isinstance(getattr(time, "monotonic_ns")(), int)  # looked up: Python 3.7+


TORCH_APIS = (
    Api("torch.load(weights_only=True)", "torch", (1, 13), True,
        ("harness/executor.py",), _torch_load_weights_only),
    Api("Optimizer.zero_grad(set_to_none=...)", "torch", (1, 7), True,
        ("suites/train.py",), _zero_grad_set_to_none),
    Api("torch.nn.Identity", "torch", (1, 1), True,
        ("suites/methods/apply.py", "suites/models/mbconv.py"), _nn_identity),
    Api("torch.__config__.show", "torch", (1, 2), False,
        ("harness/device_info.py",), _config_show),
    Api("torch.__config__.parallel_info", "torch", (1, 2), False,
        ("harness/device_info.py",), _config_parallel_info),
    Api("Tensor.mean(dim=(2, 3))", "torch", (1, 1), False,
        ("suites/models/mbconv.py", "suites/models/resnet.py"), _mean_over_dims),
    Api("torch.Generator().manual_seed(seed) -> Generator", "torch", (1, 0), False,
        ("suites/data/batches.py",), _generator_manual_seed),
    Api("torch.randn/randint/randperm(generator=...)", "torch", (1, 0), False,
        ("suites/data/batches.py",), _sampling_with_generator),
    Api("torch.nn.functional.interpolate(mode='bilinear', align_corners=...)", "torch", (1, 0), False,
        ("suites/data/batches.py",), _interpolate_align_corners),
    Api("@torch.no_grad()", "torch", (1, 0), False,
        ("suites/methods/apply.py", "suites/train.py"), _no_grad_decorator),
    Api("time.perf_counter_ns", "python", (3, 7), True,
        ("harness/agent.py", "suites/train.py"), _perf_counter_ns),
    Api("time.monotonic_ns", "python", (3, 7), True,
        ("harness/agent.py", "targets/jetson_power.py"), _monotonic_ns),
)

_VERSION = re.compile(r"\s*(\d+)\.(\d+)(?:\.(\d+))?")
_NO_TORCH = re.compile(r"No module named '?torch'?\s*$")


def parse_version(text):
    """``(major, minor, patch)`` from a version string, local and pre-release parts ignored.

    '2.13.0+cpu' -> (2, 13, 0); '1.10.0a0+git36449ea' -> (1, 10, 0); '1.13' -> (1, 13, 0);
    None for anything that does not start with ``N.N``.
    """
    match = _VERSION.match(str(text)) if text is not None else None
    if match is None:
        return None
    return int(match.group(1)), int(match.group(2)), int(match.group(3) or 0)


def _dotted(version):
    return ".".join(str(part) for part in version)


def _python_version():
    return _dotted(tuple(sys.version_info[:3]))


def _present(api):
    try:
        return bool(api.check())
    except Exception:  # an API that raises when exercised is missing or broken: both fail the check
        return False


def since(api):
    """'1.13' where the minimum is the first release with ``api``; '1.0 or earlier' where a bound."""
    return _dotted(api.minimum) + ("" if api.exact else " or earlier")


def _python_ok():
    return tuple(sys.version_info[:2]) >= PYTHON_FLOOR


def _python_problems():
    found = []
    if not _python_ok():
        found.append("Python %s is below the device floor %s: install Python %s+ and point the "
                     "target's python at it (%s); see %s"
                     % (_python_version(), _dotted(PYTHON_FLOOR), _dotted(PYTHON_FLOOR),
                        sys.executable, DOCS))
    for api in TORCH_APIS:
        if api.package == "python" and not _present(api):
            found.append("Python %s lacks %s (in Python since %s)"
                         % (_python_version(), api.name, since(api)))
    return found


def _install_torch():
    """What to do about torch: on a Python below the floor, torch alone cannot fix it."""
    if _python_ok():
        return "install torch >= %s for this Python (%s); see %s" % (_dotted(TORCH_FLOOR), sys.executable, DOCS)
    return "install torch >= %s under a Python %s+ (not this %s); see %s" % (
        _dotted(TORCH_FLOOR), _dotted(PYTHON_FLOOR), _python_version(), DOCS)


def _import_torch():
    """(torch module, None) or (None, problem message)."""
    try:
        import torch
    except ImportError as exc:
        if getattr(exc, "name", None) == "torch" or _NO_TORCH.search(str(exc)):
            return None, "torch is not installed on the device (%s): %s" % (exc, _install_torch())
        return None, ("torch is installed but cannot be imported (ImportError: %s): %s"
                      % (exc, _install_torch()))
    except Exception as exc:
        return None, ("torch is installed but cannot be imported (%s: %s): %s"
                      % (type(exc).__name__, exc, _install_torch()))
    return torch, None


def _torch_problems():
    torch, problem = _import_torch()
    if torch is None:
        return [problem]
    found = []
    raw = getattr(torch, "__version__", None)
    version = parse_version(raw)
    where = getattr(torch, "__file__", None) or "?"
    if version is None:
        found.append("torch (%s) reports version %r, which is not a version number; the device "
                     "floor is %s: %s" % (where, raw, _dotted(TORCH_FLOOR), _install_torch()))
    elif version[:2] < TORCH_FLOOR:
        found.append("torch %s is below the device floor %s (imported from %s): %s"
                     % (raw, _dotted(TORCH_FLOOR), where, _install_torch()))
    label = "torch %s" % raw if raw is not None else "torch"
    # below the floor the advice is given once above; at or above it a gap means an odd build
    advice = "" if found else (": this build meets the version floor but not the API; "
                               + _install_torch())
    for api in TORCH_APIS:
        if api.package == "torch" and not _present(api):
            found.append("%s lacks %s (in torch since %s)%s" % (label, api.name, since(api), advice))
    return found


def problems():
    """What keeps this interpreter's stack from running the device side, as messages; [] if none.

    The Python version is checked before torch is imported. Never raises.
    """
    found = []
    try:
        found.extend(_python_problems())
        found.extend(_torch_problems())
    except Exception as exc:  # the contract is a list of messages, never an exception
        found.append("the device floor check failed (%s: %s); see %s" % (type(exc).__name__, exc, DOCS))
    return found


def stack():
    """'Python X, torch Y' for the running interpreter (torch as already imported, if at all)."""
    torch = sys.modules.get("torch")
    version = getattr(torch, "__version__", None) if torch is not None else None
    return "Python %s, torch %s" % (_python_version(), version if version is not None else "not importable")


def main(argv=None):
    """``python -m harness.floor``: print the problems and return 1, or print OK and return 0."""
    found = problems()
    if found:
        print("device stack NOT OK (%s):" % stack())
        for problem in found:
            print("  - " + problem)
        return 1
    print("device stack OK: " + stack())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
