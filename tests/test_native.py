"""The op library's C build (``suites/ops/native.py``): its OpenMP build runs on torch's own
OpenMP runtime, and a build that would bring a second runtime into the process is refused."""
import os
import subprocess
import sys
import textwrap

from suites.ops import native
from tests.helpers import require_c_kernels


def test_the_openmp_build_shares_torchs_openmp_runtime():
    """CI's machine has GNU OpenMP in torch and in its C compiler: the kernels must be the
    ``-fopenmp`` build there, and loading them mapped no second runtime."""
    require_c_kernels()
    how = native.backend()
    if os.environ.get("CI"):
        assert "-fopenmp" in how, how
    if "-fopenmp" in how:
        runtimes = native.openmp_runtimes()
        assert runtimes is not None and len(runtimes) == 1, runtimes


def test_an_openmp_build_that_brings_its_own_runtime_is_refused(tmp_path):
    """The kernels linked also against another library named as an OpenMP runtime (Intel's
    ``libiomp5.so``, a stand-in built here): loading it maps a runtime torch does not use, so
    ``_load`` refuses it, naming both. In a child process, so this one keeps one runtime."""
    require_c_kernels()
    (tmp_path / "empty.c").write_text("int odt_stand_in_runtime(void) { return 0; }\n")
    fake = tmp_path / "libiomp5.so"
    subprocess.run([os.environ.get("CC", "cc"), "-shared", "-fPIC", "-o", str(fake), str(tmp_path / "empty.c"),
                    "-Wl,-soname,libiomp5.so"], check=True)
    child = textwrap.dedent("""
        import os, sys
        from suites.ops import native
        flags = ("-O3", "-fopenmp", "-Wl,--no-as-needed", sys.argv[1], "-Wl,-rpath," + os.path.dirname(sys.argv[1]))
        path = native._build(native.SOURCES, flags)
        try:
            native._load(path, openmp=True)
        except OSError as exc:
            print("refused:", exc)
        native._load(native._build(native.SOURCES, ("-O3",)), openmp=False)  # the fallback loads
        print("fallback loaded")
    """)
    env = dict(os.environ, ODT_OPS_BUILD_DIR=str(tmp_path / "build"))
    done = subprocess.run([sys.executable, "-c", child, str(fake)], capture_output=True, text=True, env=env,
                          cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))), timeout=120)
    assert done.returncode == 0, done.stderr
    assert "refused: its OpenMP runtime is not torch's" in done.stdout and str(fake) in done.stdout, done.stdout
    assert "fallback loaded" in done.stdout
