"""Ledger.advertised_keys when the node's count and its logs disagree: read again, head included, then fail.

anvil can answer a call at its newest block from state that already holds the block it is mining, before
that block's logs are served (a balance at block n counted block n+1's transfers in a measured run): the
count says 2 while the logs up to n hold none. A read again at the same head can never agree, so the head
is read again too; a node whose logs stay short is named, never answered with a partial key set."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

import swarmd.ledger.client as client
import swarmd.ledger.events as events
from swarmd.errors import LedgerError
from swarmd.ledger.client import Ledger
from swarmd.ledger.types import AdvertisedKeys, RoundInfo

ADDRESS = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
KEYS = [AdvertisedKeys("0x" + "11" * 20, b"\x01" * 32, b"\x02" * 32)]


@pytest.fixture
def ledger(monkeypatch: pytest.MonkeyPatch) -> tuple[Ledger, list[int]]:
    """A Ledger whose node's head moves on by one block at each read; the heads the count was read at."""
    lg = Ledger("http://127.0.0.1:9", ADDRESS)  # never reached: every read below is faked
    heads = iter(range(17, 100))
    counted_at: list[int] = []
    monkeypatch.setattr(lg, "block_number", lambda: next(heads))
    monkeypatch.setattr(lg, "_call", lambda name, r, block: (name, r, block))
    monkeypatch.setattr(RoundInfo, "from_chain", staticmethod(lambda raw: SimpleNamespace(at=raw[2])))
    monkeypatch.setattr(client.time, "sleep", lambda s: None)
    return lg, counted_at


def test_a_count_ahead_of_the_logs_is_read_again_at_a_new_head(monkeypatch, ledger):
    lg, counted_at = ledger

    def logs(_lg, info, head):
        counted_at.append(head)
        assert info.at == head  # the count and the logs are always read at one block
        if head < 19:
            raise LedgerError("round 0: 0 KeysAdvertised events, the contract counts 1")
        return KEYS

    monkeypatch.setattr(events, "advertised_keys", logs)
    assert lg.advertised_keys(0) == KEYS
    assert counted_at == [17, 18, 19]


def test_logs_that_stay_short_are_named_after_the_last_read(monkeypatch, ledger):
    lg, counted_at = ledger

    def logs(_lg, info, head):
        counted_at.append(head)
        raise LedgerError("round 0: 0 KeysAdvertised events, the contract counts 1", hint="incomplete")

    monkeypatch.setattr(events, "advertised_keys", logs)
    with pytest.raises(LedgerError, match="0 KeysAdvertised events, the contract counts 1"):
        lg.advertised_keys(0)
    assert counted_at == list(range(17, 17 + client._LOG_ATTEMPTS))
