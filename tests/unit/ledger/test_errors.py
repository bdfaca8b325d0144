"""Revert decoding and argument checks of the ledger client, without a chain."""

from __future__ import annotations

import pytest
from eth_abi import encode
from eth_utils import keccak, to_checksum_address

from swarmd.errors import ContractRevert, LedgerError
from swarmd.ledger import Ledger, Outcome, RoundInfo, RoundStatus, errors
from swarmd.ledger.artifact import load_artifact
from swarmd.ledger.errors import LedgerArgumentError, RevertDecoder, TransactionFailed

SITE = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
SEAL = b"\x07" * 32


@pytest.fixture(scope="module")
def decoder() -> RevertDecoder:
    return RevertDecoder(load_artifact().abi)


def test_decodes_custom_error_with_args(decoder: RevertDecoder) -> None:
    data = keccak(text="SwarmLedgerNotLeader(uint256,address,address)")[:4] + encode(
        ["uint256", "address", "address"], [4, SITE.lower(), "0x" + "ab" * 20]
    )
    exc = decoder.decode("0x" + data.hex())
    assert isinstance(exc, errors.NotLeader) and isinstance(exc, ContractRevert)
    # error_name drops the contract prefix (it is the class name); solidity_name is the ABI's.
    assert exc.error_name == "NotLeader" and exc.solidity_name == "SwarmLedgerNotLeader"
    # Addresses come back checksummed, so they compare equal to account.address.
    assert exc.error_args == (4, SITE, to_checksum_address("0x" + "ab" * 20))
    assert "NotLeader(4" in str(exc) and "current leader" in str(exc)
    assert exc.exit_code == 6


def test_decodes_enum_and_no_arg_errors(decoder: RevertDecoder) -> None:
    data = keccak(text="SwarmLedgerRoundNotOpen(uint256,uint8)")[:4] + encode(["uint256", "uint8"], [2, 1])
    exc = decoder.decode(data)
    assert isinstance(exc, errors.RoundNotOpen) and exc.error_args == (2, RoundStatus.ELECTED)
    assert isinstance(decoder.decode(keccak(text="SwarmLedgerZeroHash()")[:4]), errors.ZeroHash)


def test_unprefixed_selector_is_not_ours(decoder: RevertDecoder) -> None:
    # The selector is over the full Solidity name: the pre-prefix `NotLeader(...)` is an unknown error.
    data = keccak(text="NotLeader(uint256,address,address)")[:4] + b"\x00" * 96
    assert isinstance(decoder.decode(data), TransactionFailed)


def test_error_known_to_the_abi_but_not_to_python_keeps_a_readable_name() -> None:
    abi = [{"type": "error", "name": "SwarmLedgerSomethingNew", "inputs": [{"name": "x", "type": "uint256"}]}]
    exc = RevertDecoder(abi).decode(
        keccak(text="SwarmLedgerSomethingNew(uint256)")[:4] + encode(["uint256"], [7])
    )
    assert type(exc) is ContractRevert and exc.error_name == "SomethingNew" and exc.error_args == (7,)


@pytest.mark.parametrize("data", [None, "", "0x", "0xdeadbeef", "0xzz", b"\x01\x02"])
def test_unknown_or_garbage_revert_data(decoder: RevertDecoder, data: object) -> None:
    exc = decoder.decode(data)  # type: ignore[arg-type]
    assert isinstance(exc, TransactionFailed)


def test_truncated_args_do_not_crash(decoder: RevertDecoder) -> None:
    data = keccak(text="SwarmLedgerWrongRound(uint256,uint256)")[:4] + b"\x00" * 5
    exc = decoder.decode(data)
    assert isinstance(exc, errors.WrongRound)


def test_client_rejects_bad_arguments_before_any_rpc() -> None:
    ledger = Ledger("http://127.0.0.1:9", "0x" + "11" * 20, retries=0)
    with pytest.raises(LedgerArgumentError, match="32 bytes"):
        ledger.commit(0, b"short", 1, seal=SEAL)
    with pytest.raises(LedgerArgumentError, match="n_samples"):
        ledger.commit(0, b"\x01" * 32, 2**32, seal=SEAL)
    with pytest.raises(LedgerArgumentError, match="round"):
        ledger.commit(-1, b"\x01" * 32, 1, seal=SEAL)
    with pytest.raises(LedgerArgumentError, match="not an Ethereum address"):
        ledger.admit("bob")
    with pytest.raises(LedgerArgumentError, match="CURVE"):
        ledger.request_join(b"x" * 33, "tcp://a:1")
    with pytest.raises(LedgerArgumentError, match="hex"):
        ledger.finalize(0, "0xnothex", {SITE: Outcome.INCLUDED})
    with pytest.raises(LedgerArgumentError, match="finalized site"):
        ledger.finalize(0, b"\x01" * 32, {"carol": Outcome.INCLUDED})
    with pytest.raises(LedgerArgumentError, match="election seal"):
        ledger.commit(0, b"\x01" * 32, 1, seal=b"\x01" * 31)
    with pytest.raises(LedgerArgumentError, match="election secret"):
        ledger.reveal(0, b"\x01" * 33)
    with pytest.raises(LedgerArgumentError, match="signature"):
        ledger.dispute(0, "0x00")  # type: ignore[arg-type]
    with pytest.raises(LedgerArgumentError, match="milli_epsilon"):
        ledger.commit(0, b"\x01" * 32, 1, milli_epsilon=2**32, seal=SEAL)
    with pytest.raises(LedgerArgumentError, match="milli_epsilon"):
        ledger.commit(0, b"\x01" * 32, 1, milli_epsilon=-1, seal=SEAL)
    with pytest.raises(LedgerArgumentError, match="key_count"):
        ledger.commit(0, b"\x01" * 32, 1, key_count=2**16, seal=SEAL)
    with pytest.raises(LedgerArgumentError, match="mask public key must be 32 bytes"):
        ledger.advertise_keys(0, b"\x01" * 31, b"\x02" * 32)
    with pytest.raises(LedgerArgumentError, match="encryption public key must be 32 bytes"):
        ledger.advertise_keys(0, b"\x01" * 32, b"\x02" * 33)
    with pytest.raises(LedgerArgumentError):
        Ledger("http://127.0.0.1:9", "not-an-address")
    assert issubclass(LedgerArgumentError, LedgerError)


def test_round_info_from_view_tuple() -> None:
    zero = b"\0" * 32
    other = "0x" + "ab" * 20
    view = (
        1, 2, 1, SITE, b"\x02" * 32, b"\x03" * 32, 10, 20, 30, 2,
        [(SITE, b"\x04" * 32, 7, 15, 2500), (other, b"\x05" * 32, 3, 16, 0)], [], [SITE], [other],
        [SITE, other], bytes([0, 6]),
    )  # fmt: skip
    info = RoundInfo.from_chain(view)
    assert info.status is RoundStatus.FINALIZED
    assert info.finalized_block == 30 and info.abandoned_block is None
    assert info.first_commit_block == 15 and info.commit_of(SITE.lower()).n_samples == 7  # type: ignore[union-attr]
    assert info.key_count == 2 and info.secure_aggregation and info.recovered == (other,)
    assert [c.milli_epsilon for c in info.commits] == [2500, 0]
    assert [c.epsilon for c in info.commits] == [2.5, None]  # 0 = the site keeps no privacy account
    doc = info.to_json()
    assert doc["total_samples"] == 10 and doc["included"] == [SITE] and doc["recovered"] == [other]
    assert doc["mode"] == "secure aggregation" and doc["key_count"] == 2
    assert info.outcomes == (Outcome.INCLUDED, Outcome.RECOVERED)
    assert info.outcome_of(other) is Outcome.RECOVERED
    assert doc["outcomes"] == ["included", "recovered"] and doc["revealed"] == [SITE, other]
    assert doc["commits"][0]["milli_epsilon"] == 2500 and doc["commits"][0]["epsilon"] == 2.5
    open_view = (2, 0, 0, "0x" + "00" * 20, b"\x02" * 32, zero, 31, 0, 0, 0, [], [], [], [], [], b"")
    info = RoundInfo.from_chain(open_view)
    assert info.leader is None and info.merged_hash is None and info.elected_block is None
    assert info.mode == "plain" and info.recovered == ()
