import os

import pytest


@pytest.fixture(scope="session", autouse=True)
def artifact_cache(tmp_path_factory):
    """One artifact cache for the session (pre-trained backbones are made once), never ~/.cache."""
    root = tmp_path_factory.mktemp("odt-cache")
    old = os.environ.get("ODT_BENCH_CACHE")
    os.environ["ODT_BENCH_CACHE"] = str(root)
    yield root
    if old is None:
        os.environ.pop("ODT_BENCH_CACHE", None)
    else:
        os.environ["ODT_BENCH_CACHE"] = old
