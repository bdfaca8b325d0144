"""The lean view reader's answers: a well-formed one decodes as web3 decodes it; anything else (an error,
no contract, bytes that are not the outputs, a gateway's page that is not a JSON-RPC response) is
`NotTaken`, which sends the read through web3's call to be named, and never a crash."""

from __future__ import annotations

import pytest
from web3 import Web3

from swarmd.ledger.artifact import load_artifact
from swarmd.ledger.views import NotTaken, Views

ADDRESS = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


@pytest.fixture(scope="module")
def views() -> Views:
    return Views(load_artifact().abi, Web3().codec)


def test_a_well_formed_answer_decodes_with_addresses_checksummed(views: Views) -> None:
    method, params = views.request("0x" + "11" * 20, "admin", (), 7)
    assert method == "eth_call" and params[1] == "0x7" and params[0]["data"].startswith("0x")
    word = "0x" + "00" * 12 + ADDRESS[2:].lower()
    assert views.answer("admin", {"jsonrpc": "2.0", "id": 1, "result": word}) == ADDRESS
    assert views.answer("currentRound", {"id": 2, "result": "0x" + "00" * 31 + "05"}) == 5
    assert "admin" in views and "commit" not in views  # a transaction is no view


@pytest.mark.parametrize(
    "response",
    [
        {"id": 1, "error": {"code": 3, "message": "execution reverted", "data": "0x12345678"}},
        {"id": 1, "result": "0x"},  # no contract at the address
        {"id": 1, "result": "0x1234"},  # too short for the output
        {"id": 1, "result": "0xzz"},
        {"id": 1, "result": 5},
        {"id": 1},
        ["not", "a", "response"],
        "<html>502 Bad Gateway</html>",
        None,
    ],
)
def test_anything_else_is_left_to_web3(views: Views, response: object) -> None:
    with pytest.raises(NotTaken):
        views.answer("currentRound", response)
