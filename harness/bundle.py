"""The device-side code as a bundle: the files a device needs to execute an ExecutionPlan.

Only these files are pushed to a remote device; they must keep to the device-side version floor
(``harness/floor.py``), which the tests check with vermin. The bundle's id is the sha256 over
its files' paths and bytes, so an unchanged bundle is never re-sent.
"""
import hashlib
import io
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DEVICE_FILES = (
    "harness/__init__.py",
    "harness/agent.py",
    "harness/calibrate.py",
    "harness/device_info.py",
    "harness/executor.py",
    "harness/floor.py",
    "harness/probe.py",
    "harness/protocol.py",
    "harness/syschecks.py",
    "suites/__init__.py",
    "suites/counts.py",
    "suites/data/__init__.py",
    "suites/data/batches.py",
    "suites/fewshot.py",
    "suites/methods/__init__.py",
    "suites/methods/apply.py",
    "suites/methods/sparse_update.py",
    "suites/methods/stock.py",
    "suites/methods/tinytrain.py",
    "suites/methods/update_plan.py",
    "suites/models/__init__.py",
    "suites/models/mbconv.py",
    "suites/models/paper_models.json",
    "suites/models/resnet.py",
    "suites/models/single_conv.py",
    "suites/models/tiny_models.json",
    "suites/ops/__init__.py",
    "suites/ops/activation.py",
    "suites/ops/bits.c",
    "suites/ops/bits.py",
    "suites/ops/conv.py",
    "suites/ops/filtered.c",
    "suites/ops/filtered.py",
    "suites/ops/native.py",
    "suites/quant.py",
    "suites/quantities.py",
    "suites/train.py",
    "targets/__init__.py",
    "targets/jetson_power.py",
)


def bundle_id(root=ROOT) -> str:
    digest = hashlib.sha256()
    for rel in DEVICE_FILES:
        digest.update(rel.encode() + b"\0" + (Path(root) / rel).read_bytes() + b"\0")
    return digest.hexdigest()


def bundle_tar(root=ROOT) -> bytes:
    """An uncompressed tar of the device files, with fixed metadata (same files, same bytes)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tar:
        for rel in DEVICE_FILES:
            data = (Path(root) / rel).read_bytes()
            info = tarfile.TarInfo(rel)
            info.size, info.mode, info.mtime = len(data), 0o644, 0
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()
