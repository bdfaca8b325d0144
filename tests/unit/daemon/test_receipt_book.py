"""ReceiptBook: one JSON file per round under the state dir, written atomically; a receipt reads back
as it was put, a later term's replaces an earlier one, and a damaged file is a named error that leaves
the other rounds' receipts readable."""

from __future__ import annotations

import json
import os

import pytest
from eth_account import Account

from swarmd.daemon.receipts import CorruptReceipt, ReceiptBook
from swarmd.errors import StoreError
from swarmd.ledger.receipt import BadReceipt, Receipt, receipt_signer, sign_receipt

CONTRACT = "0x5FbDB2315678afecb367f032d93F642f64180aa3"
LEADER = Account.from_key(b"\x01" * 32)
SITE = Account.from_key(b"\x02" * 32).address


def _receipt(r: int, term: int = 1) -> tuple[Receipt, bytes]:
    receipt = Receipt(round=r, term=term, site=SITE, update_hash=bytes([r]) * 32)
    return receipt, sign_receipt(LEADER, CONTRACT, 31337, receipt)


def test_a_receipt_reads_back_as_put_and_still_recovers_to_the_leader(tmp_path) -> None:
    book = ReceiptBook(tmp_path)
    assert book.get(3) is None and book.rounds() == []
    receipt, sig = _receipt(3)
    path = book.put(receipt, sig)
    assert path == tmp_path / "receipts" / "round-000003.json"
    assert oct(path.stat().st_mode & 0o777) == "0o600"
    got = book.get(3)
    assert got == (receipt, sig)
    assert receipt_signer(CONTRACT, 31337, *got) == LEADER.address
    assert json.loads(path.read_text())["update_hash"] == "0x" + "03" * 32  # readable by an operator


def test_a_later_term_replaces_the_earlier_one_and_rounds_are_listed(tmp_path) -> None:
    book = ReceiptBook(tmp_path)
    book.put(*_receipt(1, term=1))
    book.put(*_receipt(1, term=2))
    book.put(*_receipt(4))
    assert book.get(1)[0].term == 2  # type: ignore[index]
    assert book.rounds() == [1, 4]
    names = sorted(p.name for p in (tmp_path / "receipts").iterdir())
    assert names == ["round-000001.json", "round-000004.json"]  # no tmp file left behind


@pytest.mark.parametrize(
    "damage",
    [
        "{not json",
        json.dumps({"v": 1, "round": 2}),  # fields missing
        json.dumps({"v": 9, "round": 2, "term": 1, "site": SITE, "update_hash": "0x", "signature": "0x"}),
        "__other_round__",
        "__short_signature__",
        "__bad_site__",
    ],
)
def test_a_corrupt_file_is_a_named_error_and_costs_no_other_round(tmp_path, damage: str) -> None:
    book = ReceiptBook(tmp_path)
    book.put(*_receipt(1))
    receipt, sig = _receipt(2)
    path = book.put(receipt, sig)
    doc = json.loads(path.read_text())
    if damage == "__other_round__":
        doc["round"] = 5
    elif damage == "__short_signature__":
        doc["signature"] = doc["signature"][:-2]
    elif damage == "__bad_site__":
        doc["site"] = "0x1234"
    path.write_text(json.dumps(doc) if damage.startswith("__") else damage)
    with pytest.raises(CorruptReceipt) as err:
        book.get(2)
    assert isinstance(err.value, StoreError) and "round-000002.json" in str(err.value)
    assert book.get(1) == _receipt(1)
    assert path.exists()  # evidence is never deleted


def test_a_failed_write_leaves_the_old_receipt_and_no_tmp_file(tmp_path, monkeypatch) -> None:
    book = ReceiptBook(tmp_path)
    old = _receipt(1, term=1)
    book.put(*old)

    def no_space(*_args: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_space)
    with pytest.raises(StoreError, match="No space"):
        book.put(*_receipt(1, term=2))
    monkeypatch.undo()
    assert book.get(1) == old
    assert sorted(p.name for p in (tmp_path / "receipts").iterdir()) == ["round-000001.json"]


def test_a_malformed_receipt_is_refused_before_anything_is_written(tmp_path) -> None:
    book = ReceiptBook(tmp_path)
    receipt, sig = _receipt(1)
    with pytest.raises(BadReceipt):
        book.put(receipt, sig[:64])
    assert book.get(1) is None
