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


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real sshd on 127.0.0.1 for the whole session (CI installs openssh-server)."""
    from tests.sshd import Sshd, require_sshd

    require_sshd()
    server = Sshd(tmp_path_factory.mktemp("sshd"))
    server.start()
    yield server
    server.stop()
