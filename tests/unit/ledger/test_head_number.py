"""What the head watch takes from a pushed message: a block number, and nothing else."""

from __future__ import annotations

import pytest
from web3.datastructures import AttributeDict

from swarmd.ledger.heads import head_number


@pytest.mark.parametrize(
    ("message", "number"),
    [
        ({"subscription": "0x1", "result": {"number": 7}}, 7),
        (AttributeDict({"result": AttributeDict({"number": 12, "hash": b"x"})}), 12),  # what web3 hands over
        ({"result": {"number": "0x1f"}}, 31),  # an unformatted hex quantity
        ({"result": {"number": "0xzz"}}, None),
        ({"result": {"number": -1}}, None),
        ({"result": {"number": True}}, None),
        ({"result": {"number": 1.5}}, None),
        ({"result": {}}, None),
        ({"result": "0x5"}, None),
        ({"error": {"code": -32000}}, None),
        ("0x5", None),
        (None, None),
    ],
)
def test_a_head_is_its_block_number_and_anything_else_is_ignored(message, number) -> None:
    assert head_number(message) == number
