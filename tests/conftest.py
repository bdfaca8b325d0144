"""Shared fixtures: a real anvil devnet, its funded dev accounts.

Suites add their own next to their tests: tests/contract (deployed consortia), tests/unit/train
(generated multi-site data), tests/integration (transport peers as processes), tests/e2e (whole
swarms of daemons on their own devnets, since several need 1-second blocks).
"""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from eth_account import Account
from eth_account.signers.local import LocalAccount
from hypothesis import settings

from swarmd.ledger import Devnet

# Tests must behave the same on a 2-core CI box and a GPU workstation.
os.environ.setdefault("OMP_NUM_THREADS", "1")

# CI draws the same examples on every run (seeded from each test), so a red CI is reproducible and
# a green one is not luck; a developer's run keeps exploring new examples. Loaded before any test
# module builds its own settings, which inherit from the profile.
settings.register_profile("ci", derandomize=True, print_blob=True)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

N_DEV_ACCOUNTS = 20


@pytest.fixture(scope="session")
def devnet() -> Iterator[Devnet]:
    """One real anvil (instant blocks) for the whole session; tests deploy fresh contracts on it."""
    with Devnet.start(accounts=N_DEV_ACCOUNTS) as dev:
        yield dev


@pytest.fixture(scope="session")
def accounts(devnet: Devnet) -> list[LocalAccount]:
    return [Account.from_key(k) for k in devnet.dev_keys]
