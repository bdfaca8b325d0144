"""Chain fixtures: one real anvil per session (instant blocks) and freshly deployed ledgers with N
admitted sites. Candidates for tests/conftest.py once other suites need them."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from chainkit import N_ACCOUNTS, Consortium, deploy_consortium
from eth_account import Account
from eth_account.signers.local import LocalAccount

from swarmd.ledger import Devnet


@pytest.fixture(scope="session")
def devnet() -> Iterator[Devnet]:
    with Devnet.start(accounts=N_ACCOUNTS) as dev:
        yield dev


@pytest.fixture(scope="session")
def accounts(devnet: Devnet) -> list[LocalAccount]:
    return [Account.from_key(k) for k in devnet.dev_keys]


@pytest.fixture
def consortium(devnet: Devnet, accounts: list[LocalAccount]) -> Consortium:
    """3 admitted sites, minPeers 2, commit window 5 blocks, leader timeout 5 blocks, admin admission."""
    return deploy_consortium(devnet, accounts)
