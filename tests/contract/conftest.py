"""Chain fixtures: freshly deployed ledgers with N admitted sites, on the session devnet from
tests/conftest.py."""

from __future__ import annotations

import pytest
from chainkit import Consortium, deploy_consortium
from eth_account.signers.local import LocalAccount

from swarmd.ledger import Devnet


@pytest.fixture
def consortium(devnet: Devnet, accounts: list[LocalAccount]) -> Consortium:
    """3 admitted sites, minPeers 2, commit window 5 blocks, leader timeout 5 blocks, admin admission."""
    return deploy_consortium(devnet, accounts)
