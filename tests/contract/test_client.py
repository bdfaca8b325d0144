"""The Ledger client's robustness on a real anvil: the event stream across an RPC restart, transactions
that wait out an outage, ChainUnavailable, nonce recovery when two clients share a key, wrong addresses."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest
from chainkit import N_ACCOUNTS, commit, curve_key, deploy_consortium, h32
from eth_account import Account
from eth_account.signers.local import LocalAccount

from swarmd.errors import ChainUnavailable, LedgerError
from swarmd.ledger import Devnet, Ledger
from swarmd.ledger.devnet import free_port
from swarmd.ledger.errors import NodeError, UnknownContract

pytestmark = pytest.mark.chain


def _key(e) -> tuple[str, int, int]:
    return (e.name, e.block, e.log_index)


def test_event_stream_survives_rpc_restart(tmp_path: Path) -> None:
    state, port = tmp_path / "anvil-state.json", free_port()
    dev = Devnet.start(port=port, state_file=state, accounts=N_ACCOUNTS)
    accounts = [Account.from_key(k) for k in dev.dev_keys]
    try:
        c = deploy_consortium(dev, accounts)
        stream = c.admin.events()
        before = stream.poll()
        assert [e.name for e in before][:2] == ["AdminTransferred", "RoundOpened"]
        assert [e.name for e in before].count("MemberAdmitted") == 3
        commit(c.sites[0], 0, h32("u0"), 3)
        first = stream.poll()
        assert [e.name for e in first] == ["Committed"] and first[0].args["site"] == c.sites[0].sender
        assert stream.poll() == []

        dev.stop()  # anvil dumps its chain to the state file
        stream._ledger.retries = 1
        with pytest.raises(ChainUnavailable):
            stream.poll()
        cursor = stream.next_block

        dev = Devnet.start(port=port, state_file=state, accounts=N_ACCOUNTS)
        assert stream.next_block == cursor
        commit(c.sites[1], 0, h32("u1"), 4)
        after = stream.poll()
        assert [(e.name, e.args["site"]) for e in after] == [("Committed", c.sites[1].sender)]
        # A fresh stream replays the whole history, in order, each event once.
        replay = c.admin.events().poll()
        assert [_key(e) for e in replay] == [_key(e) for e in before + first + after]
        assert len({_key(e) for e in replay}) == len(replay)
    finally:
        dev.stop()


def test_transaction_waits_out_an_outage(tmp_path: Path) -> None:
    state, port = tmp_path / "anvil-state.json", free_port()
    dev = Devnet.start(port=port, state_file=state, accounts=N_ACCOUNTS)
    accounts = [Account.from_key(k) for k in dev.dev_keys]
    try:
        c = deploy_consortium(dev, accounts)
        site = Ledger(dev.rpc_url, c.admin.address, accounts[1], retries=10, backoff=0.1)
        dev.stop()
        result: dict[str, object] = {}

        def send() -> None:
            try:
                result["receipt"] = site.update_endpoint("tcp://10.9.9.9:1")
            except LedgerError as exc:  # recorded so the assertion below can show it
                result["error"] = exc

        worker = threading.Thread(target=send)
        worker.start()
        time.sleep(0.6)  # the client is now retrying against a dead endpoint
        dev = Devnet.start(port=port, state_file=state, accounts=N_ACCOUNTS)
        worker.join(timeout=30)
        assert "error" not in result, result.get("error")
        assert result["receipt"]["status"] == 1  # type: ignore[index]
        assert c.admin.member(accounts[1].address).endpoint == "tcp://10.9.9.9:1"
    finally:
        dev.stop()


def test_unreachable_endpoint_is_chain_unavailable() -> None:
    ledger = Ledger(f"http://127.0.0.1:{free_port()}", "0x" + "11" * 20, retries=2, backoff=0.01)
    t0 = time.monotonic()
    with pytest.raises(ChainUnavailable) as exc:
        ledger.current_round()
    assert time.monotonic() - t0 < 5
    assert "unreachable after 3 attempts" in str(exc.value)


def test_two_clients_sharing_a_key_recover_nonces(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    c = deploy_consortium(devnet, accounts, sites=1, outsiders=0)
    twins = [Ledger(devnet.rpc_url, c.admin.address, accounts[1]) for _ in range(2)]
    start = devnet_nonce(devnet, accounts[1].address)
    errors: list[BaseException] = []

    def spam(client: Ledger, tag: int) -> None:
        try:
            for i in range(4):
                client.update_endpoint(f"tcp://twin-{tag}:{i}")
        except LedgerError as exc:
            errors.append(exc)

    threads = [threading.Thread(target=spam, args=(t, i)) for i, t in enumerate(twins)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    assert devnet_nonce(devnet, accounts[1].address) == start + 8


def devnet_nonce(devnet: Devnet, address: str) -> int:
    return Ledger(devnet.rpc_url, "0x" + "22" * 20).w3.eth.get_transaction_count(address)


def test_wrong_address_and_read_only_client(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    nowhere = Ledger(devnet.rpc_url, "0x" + "33" * 20)
    with pytest.raises(UnknownContract):
        nowhere.check()
    with pytest.raises(UnknownContract):
        nowhere.current_round()
    c = deploy_consortium(devnet, accounts, sites=1, outsiders=0)
    c.admin.check()
    reader = Ledger(devnet.rpc_url, c.admin.address)
    assert reader.sender is None and reader.current_round() == 0
    # The QBFT/Clique extra-data middleware is harmless on a chain that does not need it.
    assert Ledger(devnet.rpc_url, c.admin.address, poa=True).current_round() == 0
    with pytest.raises(LedgerError, match="read-only"):
        reader.request_join(curve_key(7), "tcp://r:1")


def test_unfunded_account_gets_a_node_error_with_a_hint(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    c = deploy_consortium(devnet, accounts, sites=1, outsiders=0)
    poor = Ledger(devnet.rpc_url, c.admin.address, Account.create())
    with pytest.raises(NodeError) as exc:
        poor.request_join(curve_key(8), "tcp://poor:1")
    assert "insufficient funds" in str(exc.value).lower() and exc.value.hint
    devnet.fund(poor.sender, ether=1)  # type: ignore[arg-type]
    poor.request_join(curve_key(8), "tcp://poor:1")
