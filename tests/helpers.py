"""Small builders shared by the tests (real objects, no mocks)."""
import os
import stat

import pytest

from harness.cache import ArtifactCache
from harness.compile import compile_job
from harness.job import Job
from suites.ops import native


def plan_for(model="mbv2-w0.35", method="full", resolution=128, batch=1, **kw):
    params = kw.pop("method_params", {"k": 6} if method == "bp-last-k" else {})
    job = Job(model=model, method=method, resolution=resolution, batch=batch, method_params=params, **kw)
    return compile_job(job, ArtifactCache())


def stand_in_python(tmp_path, body):
    """An executable standing in for a device's Python: a shell script running ``body``."""
    path = tmp_path / "python"
    path.write_text("#!/bin/sh\n" + body + "\n")
    path.chmod(path.stat().st_mode | stat.S_IEXEC)
    return str(path)


def require_c_kernels():
    """The op library's C kernels; skip where this machine cannot build them, except in CI,
    which has a compiler and must build them."""
    lib, how = native.library()
    if lib is None:
        assert not os.environ.get("CI"), "CI has a C compiler: the C kernels must build (%s)" % how
        pytest.skip(how)
    return lib
