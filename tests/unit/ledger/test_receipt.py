"""Receipts recover to their signer only for the same contract, chain and content; seals bind the site."""

from __future__ import annotations

import pytest
from eth_account import Account

from swarmd.ledger.receipt import BadReceipt, Receipt, election_seal, receipt_signer, sign_receipt

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
LEADER = Account.from_key(b"\x01" * 32)
SITE = Account.from_key(b"\x02" * 32).address


def test_signer_recovers_and_binds_everything() -> None:
    r = Receipt(round=3, term=1, site=SITE, update_hash=b"\xaa" * 32)
    sig = sign_receipt(LEADER, CONTRACT, 31337, r)
    assert len(sig) == 65
    assert receipt_signer(CONTRACT, 31337, r, sig) == LEADER.address
    other = Receipt(round=3, term=1, site=SITE, update_hash=b"\xab" * 32)
    assert receipt_signer(CONTRACT, 31337, other, sig) != LEADER.address
    assert receipt_signer(CONTRACT, 1, r, sig) != LEADER.address
    assert receipt_signer(SITE, 31337, r, sig) != LEADER.address


@pytest.mark.parametrize("sig", [b"", b"\x00" * 64, b"\x00" * 65])
def test_malformed_signature_is_named(sig: bytes) -> None:
    r = Receipt(round=0, term=1, site=SITE, update_hash=b"\x01" * 32)
    with pytest.raises(BadReceipt):
        receipt_signer(CONTRACT, 31337, r, sig)


def test_seal_binds_site_and_round() -> None:
    secret = b"\x07" * 32
    seal = election_seal(secret, SITE, 4)
    assert len(seal) == 32
    assert seal != election_seal(secret, LEADER.address, 4)
    assert seal != election_seal(secret, SITE, 5)
