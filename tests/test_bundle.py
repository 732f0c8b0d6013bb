"""The device-side bundle is self-sufficient: an agent run from it alone (the repository not
importable) executes a plan. Over the loopback sshd the editable install would hide a missing file."""
import io
import json
import subprocess
import sys
import tarfile

from harness import protocol
from harness.bundle import DEVICE_FILES, bundle_tar
from harness.cache import ArtifactCache
from tests.helpers import plan_for

# Drop the editable install's finder and the repository from the path, keep site-packages (torch).
ISOLATED = """
import runpy, sys
sys.meta_path[:] = [f for f in sys.meta_path if "editable" not in type(f).__name__.lower()
                    and "editable" not in getattr(f, "__module__", "").lower()]
sys.path[:] = [sys.argv[1]] + [p for p in sys.path[1:] if "site-packages" in p or "lib/python" in p]
sys.argv = ["harness.agent", "--artifacts", sys.argv[2]]
runpy.run_module("harness.agent", run_name="__main__", alter_sys=True)
"""


def test_an_agent_from_the_bundle_alone_runs_an_odt_plan(tmp_path):
    tarfile.open(fileobj=io.BytesIO(bundle_tar())).extractall(tmp_path)
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file()) == sorted(DEVICE_FILES)
    plan = plan_for(method="sparse-update", method_params={"preset": "49kb"}, resolution=32, steps=2, warmup=1, ops="odt")
    messages = [{"type": "hello", "protocol": 1}, {"type": "load", "plan": plan}, {"type": "run"}, {"type": "bye"}]
    done = subprocess.run([sys.executable, "-c", ISOLATED, str(tmp_path), str(ArtifactCache().objects)],
                          input="".join(protocol.encode(m) for m in messages), capture_output=True, text=True,
                          timeout=300, cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    replies = [json.loads(line) for line in done.stdout.splitlines()]
    assert done.returncode == 0 and replies[-1]["type"] == "result", done.stderr[-3000:]
    assert replies[-1]["ops_backend"].startswith(("C kernels", "torch ops"))
