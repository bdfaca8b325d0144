"""The event stream: every SwarmLedger event in chain order, each exactly once, across RPC restarts.

`EventStream.poll()` asks for the logs of the blocks it has not seen yet (eth_getLogs by block range,
filtered by the contract address) and advances a block cursor only after a range was fully fetched
and decoded. Nothing lives on the node (no filter ids), so a restarted node that kept its chain
(anvil --load-state, a Besu restart) is simply asked again; while it is down, poll() raises
ChainUnavailable and the cursor stays put.

`advertised_keys` reads one round's KeysAdvertised events: the secure-aggregation key set every peer
masks against. `join_names` reads the site names JoinRequested carries (they live in no storage slot),
`vote_tally` the VoteCast of one transaction. `attestations` and `disputes` read the Attested and Disputed
events (auditors' verdicts and upheld receipts live in no storage slot either).
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import partial
from typing import TYPE_CHECKING, Any, cast

from eth_typing import ABIEvent
from eth_utils import event_abi_to_log_topic
from web3.logs import DISCARD
from web3.types import TxReceipt

from swarmd.config import site_name_problem
from swarmd.errors import LedgerError
from swarmd.ledger.artifact import load_artifact
from swarmd.ledger.types import AdvertisedKeys, Attestation, Dispute, LedgerEvent, RoundInfo, VoteTally

if TYPE_CHECKING:
    from swarmd.ledger.client import Ledger

_MAX_RANGE = 2_000  # blocks per eth_getLogs request; many providers cap the range


class EventStream:
    def __init__(self, ledger: Ledger, from_block: int = 0, *, confirmations: int = 0) -> None:
        self._ledger = ledger
        self._next = max(0, int(from_block))
        self._confirmations = max(0, int(confirmations))
        self._by_topic: dict[bytes, Any] = {}
        for entry in load_artifact().abi:
            if entry.get("type") == "event":
                topic = bytes(event_abi_to_log_topic(cast(ABIEvent, entry)))
                self._by_topic[topic] = ledger.contract.events[entry["name"]]()

    @property
    def next_block(self) -> int:
        """The first block not yet delivered; persist it to resume a stream after a restart."""
        return self._next

    def poll(self) -> list[LedgerEvent]:
        """New events since the last poll, in (block, log index) order."""
        head = self._ledger.block_number() - self._confirmations
        out: list[LedgerEvent] = []
        while self._next <= head:
            to = min(head, self._next + _MAX_RANGE - 1)
            out.extend(self._fetch(self._next, to))
            self._next = to + 1
        return out

    def __iter__(self) -> Iterator[LedgerEvent]:
        """One pass over everything available now (does not wait for more)."""
        return iter(self.poll())

    def _fetch(self, start: int, end: int) -> list[LedgerEvent]:
        w3 = self._ledger.w3
        query = {"address": self._ledger.address, "fromBlock": start, "toBlock": end}
        logs = self._ledger._rpc(lambda: w3.eth.get_logs(query))  # type: ignore[arg-type]
        events = [ev for ev in (self._decode(log) for log in logs) if ev is not None]
        events.sort(key=lambda e: (e.block, e.log_index))
        return events

    def _decode(self, log: Any) -> LedgerEvent | None:
        topics = log.get("topics") or []
        if not topics:
            return None
        decoder = self._by_topic.get(bytes(topics[0]))
        if decoder is None:
            return None  # an event this ABI does not know (another contract version): skip, never crash
        data = decoder.process_log(log)
        return LedgerEvent(
            name=str(data["event"]),
            args={k: _plain(v) for k, v in dict(data["args"]).items()},
            block=int(data["blockNumber"]),
            tx_hash="0x" + bytes(data["transactionHash"]).hex(),
            log_index=int(data["logIndex"]),
        )


def advertised_keys(ledger: Ledger, info: RoundInfo, head: int) -> list[AdvertisedKeys]:
    """The key sets advertised in the round `info` (read at block `head`) describes, in (block, log index)
    order. Advertising closes at the round's first commit, so the search stops there, else at `head`."""
    event = ledger.contract.events.KeysAdvertised()
    topic0 = bytes(event_abi_to_log_topic(cast(ABIEvent, event.abi)))
    round_topic = info.round.to_bytes(32, "big")
    end = info.first_commit_block if info.first_commit_block is not None else head
    out: list[tuple[int, int, AdvertisedKeys]] = []
    start = info.opened_block
    while start <= end:
        to = min(end, start + _MAX_RANGE - 1)
        query: Any = {
            "address": ledger.address,
            "fromBlock": start,
            "toBlock": to,
            "topics": ["0x" + topic0.hex(), "0x" + round_topic.hex()],
        }
        logs = ledger._rpc(partial(ledger.w3.eth.get_logs, query))
        for log in logs:
            data = event.process_log(log)
            a = data["args"]
            keys = AdvertisedKeys(str(a["site"]), bytes(a["maskKey"]), bytes(a["encKey"]))
            out.append((int(data["blockNumber"]), int(data["logIndex"]), keys))
        start = to + 1
    out.sort(key=lambda t: (t[0], t[1]))
    if len(out) != info.key_count:
        # The chain counts what its events say; a node that lost logs must not yield a different key set.
        raise LedgerError(
            f"round {info.round}: {len(out)} KeysAdvertised events, the contract counts {info.key_count}",
            hint="the node's log index is incomplete; query an archive node or resync it",
        )
    return [k for _, _, k in out]


def join_names(ledger: Ledger, from_block: int, to_block: int) -> dict[str, str]:
    """account -> the name of its latest join request in blocks [from_block, to_block]. Names are the
    joining site's own words: one that is not a valid site name (config.site_name_problem) is dropped,
    so a reader falls back to the account rather than show what a site chose to look like."""
    event = ledger.contract.events.JoinRequested()
    topic0 = "0x" + bytes(event_abi_to_log_topic(cast(ABIEvent, event.abi))).hex()
    found: list[tuple[int, int, str, str]] = []
    start = max(0, from_block)
    while start <= to_block:
        to = min(to_block, start + _MAX_RANGE - 1)
        query: Any = {"address": ledger.address, "fromBlock": start, "toBlock": to, "topics": [topic0]}
        for log in ledger._rpc(partial(ledger.w3.eth.get_logs, query)):
            data = event.process_log(log)
            args = data["args"]
            found.append(
                (int(data["blockNumber"]), int(data["logIndex"]), str(args["account"]), args["name"])
            )
        start = to + 1
    names: dict[str, str] = {}
    for _, _, account, name in sorted(found):
        if site_name_problem(name) is None:
            names[account] = name
        else:
            names.pop(account, None)  # a rejoin under an invalid name withdraws the old one
    return names


def _logs(ledger: Ledger, name: str, from_block: int, to_block: int) -> list[Any]:
    """The decoded `name` events of [from_block, to_block], in (block, log index) order."""
    event = ledger.contract.events[name]()
    topic0 = "0x" + bytes(event_abi_to_log_topic(cast(ABIEvent, event.abi))).hex()
    found: list[Any] = []
    start = max(0, from_block)
    while start <= to_block:
        to = min(to_block, start + _MAX_RANGE - 1)
        query: Any = {"address": ledger.address, "fromBlock": start, "toBlock": to, "topics": [topic0]}
        found.extend(event.process_log(log) for log in ledger._rpc(partial(ledger.w3.eth.get_logs, query)))
        start = to + 1
    return sorted(found, key=lambda d: (int(d["blockNumber"]), int(d["logIndex"])))


def attestations(ledger: Ledger, from_block: int, to_block: int) -> list[Attestation]:
    """The Attested events of [from_block, to_block]: who audited which round, and whether it agreed."""
    return [
        Attestation(
            int(d["args"]["round"]), str(d["args"]["auditor"]), bool(d["args"]["ok"]), int(d["blockNumber"])
        )
        for d in _logs(ledger, "Attested", from_block, to_block)
    ]


def disputes(ledger: Ledger, from_block: int, to_block: int) -> list[Dispute]:
    """The Disputed events of [from_block, to_block]: receipts the contract upheld against a leader."""
    return [
        Dispute(
            int(d["args"]["round"]), str(d["args"]["site"]), str(d["args"]["leader"]), int(d["blockNumber"])
        )
        for d in _logs(ledger, "Disputed", from_block, to_block)
    ]


def vote_tally(ledger: Ledger, receipt: TxReceipt) -> VoteTally | None:
    """The ballot a transaction cast (its VoteCast event), or None: in admin mode, or during a majority
    consortium's bootstrap, the admin admits and removes directly and no ballot is cast."""
    for data in ledger.contract.events.VoteCast().process_receipt(receipt, errors=DISCARD):
        a = data["args"]
        return VoteTally(
            str(a["candidate"]), str(a["voter"]), bool(a["admit"]), int(a["votes"]), int(a["needed"])
        )
    return None


def _plain(value: Any) -> Any:
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value
