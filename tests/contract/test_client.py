"""The Ledger client's robustness on a real anvil: the event stream across an RPC restart, transactions
that wait out an outage, ChainUnavailable, nonce recovery when two clients share a key, wrong addresses, and
the reads a transaction is built from, batched into one request (or not, for a node that refuses batches)."""

from __future__ import annotations

import http.server
import json
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from chainkit import N_ACCOUNTS, commit, curve_key, deploy_consortium, h32
from eth_account import Account
from eth_account.signers.local import LocalAccount

from swarmd.errors import ChainUnavailable, LedgerError
from swarmd.ledger import Devnet, Ledger, errors
from swarmd.ledger.devnet import free_port, rpc_call
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


class _CountingProxy:
    """A real HTTP proxy in front of anvil that counts the JSON-RPC requests of each POST and, when told,
    refuses batches as some nodes and gateways do (`refuse`: "http" answers 400, "error" a JSON-RPC error
    object)."""

    def __init__(self, upstream: str, refuse: str | None = None) -> None:
        self.posts: list[list[str]] = []
        self.refuse = refuse
        proxy = self
        direct = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # whatever HTTP_PROXY says

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                payload = json.loads(body)
                batch = payload if isinstance(payload, list) else [payload]
                proxy.posts.append([r["method"] for r in batch])
                if isinstance(payload, list) and proxy.refuse == "http":
                    self._answer(400, b"batch requests are not supported")
                elif isinstance(payload, list) and proxy.refuse == "error":
                    error = {"code": -32005, "message": "batch size limit exceeded"}
                    self._answer(200, json.dumps({"jsonrpc": "2.0", "id": None, "error": error}).encode())
                else:
                    request = urllib.request.Request(upstream, body, {"Content-Type": "application/json"})
                    with direct.open(request, timeout=10) as response:
                        self._answer(200, response.read())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def proxied(
    devnet: Devnet, accounts: list[LocalAccount]
) -> Iterator[Callable[..., tuple[Ledger, _CountingProxy]]]:
    c = deploy_consortium(devnet, accounts, sites=2, outsiders=0)
    proxies: list[_CountingProxy] = []

    def site(refuse: str | None = None) -> tuple[Ledger, _CountingProxy]:
        proxies.append(_CountingProxy(devnet.rpc_url, refuse))
        return Ledger(proxies[-1].url, c.admin.address, accounts[1], retries=1, backoff=0.01), proxies[-1]

    site.consortium = c  # type: ignore[attr-defined]
    yield site
    for p in proxies:
        p.close()


def _receipt_polls(posts: list[list[str]]) -> None:
    """The receipt, asked again while anvil has not mined it yet (on a loaded box, now and then)."""
    assert 1 <= len(posts) <= 5 and all(p == ["eth_getTransactionReceipt"] for p in posts)


def test_a_transaction_reads_its_nonce_gas_and_fees_in_one_batch(proxied) -> None:
    site, proxy = proxied()
    site.update_endpoint("tcp://batched:1")  # the first also asks the chain id once (cached after)
    proxy.posts.clear()
    receipt = site.update_endpoint("tcp://batched:2")
    assert receipt["status"] == 1
    assert proxy.posts[:2] == [
        ["eth_getTransactionCount", "eth_estimateGas", "eth_getBlockByNumber", "eth_maxPriorityFeePerGas"],
        ["eth_sendRawTransaction"],
    ]
    _receipt_polls(proxy.posts[2:])
    # The fees are what web3 would have filled in: the suggested tip, and room for the base fee to double.
    tx = site.w3.eth.get_transaction(receipt["transactionHash"])
    base_fee = site.w3.eth.get_block(receipt["blockNumber"] - 1)["baseFeePerGas"]
    assert tx["maxFeePerGas"] >= tx["maxPriorityFeePerGas"] + base_fee


def test_a_revert_in_the_batched_estimate_is_named_and_batching_goes_on(proxied) -> None:
    site, proxy = proxied()
    site.update_endpoint("tcp://batched:3")
    proxy.posts.clear()
    with pytest.raises(errors.NotPending):  # it is a member already
        site.admit(site.sender)  # type: ignore[arg-type]
    assert len(proxy.posts) == 1 and len(proxy.posts[0]) == 4  # nothing is sent
    site.update_endpoint("tcp://batched:4")
    assert [len(post) for post in proxy.posts[:3]] == [4, 4, 1]
    _receipt_polls(proxy.posts[3:])


@pytest.mark.parametrize("refuse", ["http", "error"])
def test_a_node_that_refuses_batches_is_asked_one_request_at_a_time(proxied, refuse: str) -> None:
    site, proxy = proxied(refuse)
    assert site.update_endpoint(f"tcp://unbatched-{refuse}:1")["status"] == 1
    assert len(proxy.posts[0]) == 4  # the one batch it refused
    proxy.posts.clear()
    assert site.update_endpoint(f"tcp://unbatched-{refuse}:2")["status"] == 1
    assert all(len(post) == 1 for post in proxy.posts)
    assert [p[0] for p in proxy.posts[:5]] == [
        "eth_getTransactionCount",
        "eth_estimateGas",
        "eth_getBlockByNumber",
        "eth_maxPriorityFeePerGas",
        "eth_sendRawTransaction",
    ]
    _receipt_polls(proxy.posts[5:])


@pytest.mark.parametrize("refuse", [None, "http"])
def test_the_election_view_reads_the_round_and_both_gates_at_once(proxied, refuse: str | None) -> None:
    site, proxy = proxied(refuse)
    commit(site, 0, h32("u0"), 3)
    commit(proxied.consortium.sites[1], 0, h32("u1"), 3)  # every member: commits close
    proxy.posts.clear()
    view = site.election_view(0)
    assert view.info == site.round(0) and view.info.commit_of(site.sender) is not None  # type: ignore[arg-type]
    assert (view.can_reveal, view.can_elect) == (site.can_reveal(0), site.can_elect(0)) == (True, False)
    expected = [["eth_call", "eth_call", "eth_call"]] if refuse is None else [["eth_call"]] * 3
    assert proxy.posts[: len(expected)] == expected
    with pytest.raises(errors.UnknownRound):  # a revert in a batch is named as in a single call
        site.election_view(7)


def test_the_next_block_holds_the_commit_that_closes_commits_before_the_latest_does() -> None:
    """Read at "pending", the round already holds a commit sent and not yet mined, and `can_reveal`
    (read there) is true when that commit closes the commits: the latest block still lacks it. The
    sharded exchange opens on the round read at "pending", with every committer."""
    with Devnet.start(accounts=N_ACCOUNTS) as dev:
        c = deploy_consortium(dev, [Account.from_key(k) for k in dev.dev_keys], sites=2, outsiders=0)
        commit(c.sites[0], 0, h32("u0"), 3)
        rpc_call(dev.rpc_url, "evm_setAutomine", [False])  # the next transaction waits for evm_mine
        last = threading.Thread(target=commit, args=(c.sites[1], 0, h32("u1"), 4), daemon=True)
        last.start()
        end = time.monotonic() + 30
        while len(c.admin.round(0, "pending").commits) < 2 and time.monotonic() < end:
            time.sleep(0.05)
        pending, latest = c.admin.round(0, "pending"), c.admin.round(0)
        assert [x.site for x in pending.commits] == [s.sender for s in c.sites]
        assert [x.site for x in latest.commits] == [c.sites[0].sender]
        assert c.admin.can_reveal(0)  # the commits close with the next block
        rpc_call(dev.rpc_url, "evm_mine", [])
        last.join(30)
        assert c.admin.round(0) == pending


def test_a_round_start_reads_members_round_number_and_round_at_once(proxied) -> None:
    site, proxy = proxied()
    site.current_round()  # the chain id, once
    proxy.posts.clear()
    start = site.round_start(0)
    assert proxy.posts == [["eth_call", "eth_call", "eth_call"]]
    assert start.members == site.members() and start.current == 0 and start.info == site.round(0)
    with pytest.raises(errors.UnknownRound):  # past the current round: the caller reads one at a time
        site.round_start(1)


def test_the_node_is_reached_through_the_proxy_the_environment_names(
    devnet: Devnet, accounts: list[LocalAccount], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A hospital's HTTP proxy, named by the environment as requests reads it: reads and transactions go
    through it, and a site whose NO_PROXY names the node goes to the node directly. The environment is
    read when the client is made (a daemon's does not change under it)."""
    c = deploy_consortium(devnet, accounts, sites=2, outsiders=0)
    proxy = _CountingProxy(devnet.rpc_url)
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    try:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        site = Ledger(devnet.rpc_url, c.admin.address, accounts[1], retries=1, backoff=0.01)
        site.round(0)
        site.update_endpoint("tcp://through-the-proxy:1")
        methods = [m for post in proxy.posts for m in post]
        assert "eth_call" in methods and "eth_sendRawTransaction" in methods
        monkeypatch.setenv("NO_PROXY", "127.0.0.1")
        seen = len(proxy.posts)
        site.round(0)  # read when the client was made
        assert len(proxy.posts) == seen + 1
        direct = Ledger(devnet.rpc_url, c.admin.address, accounts[1], retries=1, backoff=0.01)
        direct.round(0)
        assert len(proxy.posts) == seen + 1
    finally:
        proxy.close()
