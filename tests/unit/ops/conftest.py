"""A local consortium of two sites on the session's real anvil, shared by the ops tests that read it."""

from __future__ import annotations

import pytest

from swarmd.ops import LocalConsortium, local_consortium
from swarmd.train import example_task_file


@pytest.fixture(scope="module")
def consortium(devnet, tmp_path_factory) -> LocalConsortium:
    return local_consortium(
        tmp_path_factory.mktemp("lc"),
        rpc_url=devnet.rpc_url,
        dev_keys=list(devnet.dev_keys),
        task_path=example_task_file("cxr_densenet"),
        sites=2,
        n_per_site=8,
        n_test=8,
    )
