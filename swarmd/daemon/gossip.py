"""Dissemination of finalized models: announce, fetch what is announced, serve, pull as a fallback.

Only models the chain lists are ever served: a round's merged hash, the initial model, and the
plain committed updates this site holds (its own, and those it received as leader), which members
fetch by hash to audit a round (`swarmd.audit`). A masked update of a secure-aggregation round,
or a plain update behind one, is never served. A holder announces to `fanout` random peers; a site
that hears an announce checks the hash on chain, fetches the model (the transport verifies the hash
as the bytes arrive), keeps it in memory, passes the announce on and writes it to disk meanwhile.
A site that sees a finalization but hears nothing pulls: first from the round's leader, then from
any member. Gossip spreads the load; the pull guarantees delivery.

An announce costs its receiver a chain read, so announces are deduplicated and bounded: at most
MAX_LOOKUPS chain reads in flight, and an announce the chain did not confirm is remembered for
NOT_ON_CHAIN_TTL seconds; announces beyond that are dropped and counted.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

from swarmd.codec import Manifest, encode
from swarmd.daemon.ports import Transport
from swarmd.daemon.store import ModelStore
from swarmd.errors import SwarmError, TransportError, WireError
from swarmd.ledger import Member, RoundInfo

log = logging.getLogger("swarmd.gossip")

# How long a site that sees a finalization waits for the gossip to reach it before it pulls. Each
# hop is one fetch; pulling early only shifts load onto the leader, pulling late delays training.
GOSSIP_GRACE = 1.0
SERVED_KEPT = 2  # encoded models kept alive while peers download them
# An announce is one small message. A peer that does not answer it within this is skipped: the pull
# guarantees it the model anyway, and the round waits on `spread` (a silent member cost every round
# the transport's 30 s request timeout; `swarm bench attack` found it).
ANNOUNCE_TIMEOUT = 2.0
MAX_LOOKUPS = 4  # chain reads started by announces, in flight at once
NOT_ON_CHAIN_KEPT = 256  # announces the chain did not confirm, remembered...
NOT_ON_CHAIN_TTL = 10.0  # ...for this many seconds (a lagging RPC node may confirm one later)


@dataclass
class Peers:
    """The active members as the chain last listed them."""

    me: str
    members: dict[bytes, str] = field(default_factory=dict)  # curve key -> account
    endpoints: dict[str, tuple[bytes, str]] = field(default_factory=dict)  # account -> (key, endpoint)

    def update(self, active: Iterable[Member]) -> None:
        active = list(active)
        self.members = {m.curve_key: m.account for m in active}
        self.endpoints = {m.account: (m.curve_key, m.endpoint) for m in active}

    def key(self, account: str) -> bytes:
        return self.endpoints[account][0]

    def others(self) -> list[str]:
        return [a for a in self.endpoints if a != self.me]


class Gossip:
    """This site's part in spreading finalized models."""

    def __init__(
        self,
        *,
        node: Transport,
        store: ModelStore,
        peers: Peers,
        fanout: int,
        max_bytes: int,
        round_info: Callable[[int], Awaitable[RoundInfo]],
        sleep: Callable[[float], Awaitable[None]],
        poll: float,
        on_stored: Callable[[], None],
        on_dropped: Callable[[str], None] = lambda reason: None,
    ) -> None:
        self.node = node
        self.store = store
        self.peers = peers
        self.fanout = fanout
        self.max_bytes = max_bytes
        self.round_info = round_info  # the round as the chain has it
        self.sleep = sleep  # the driver's sleep: ends early on a stop or a nudge
        self.poll = poll
        self.on_stored = on_stored  # a model we waited for may now be on disk
        self.on_dropped = on_dropped  # counts an announce dropped unread, by reason
        self.servable: set[bytes] = set()  # models verified against the chain, which we may serve
        self._fetching: set[bytes] = set()
        self._background: set[asyncio.Task[None]] = set()  # fetches started by announces
        self._looking: set[tuple[int, bytes]] = set()  # announces whose chain read is in flight
        self._not_on_chain: OrderedDict[tuple[int, bytes], float] = OrderedDict()  # -> expiry
        self._served: dict[bytes, tuple[Manifest, list[memoryview]]] = {}

    # --- transport handler side ---------------------------------------------------------------
    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        if model_hash not in self.servable or not self.store.holds(model_hash):
            return None
        if model_hash not in self._served:
            if len(self._served) >= SERVED_KEPT:
                self._served.pop(next(iter(self._served)))
            self._served[model_hash] = encode(self.store.get(model_hash))
        return self._served[model_hash]

    def on_announce(self, peer: bytes, r: int, h: bytes) -> None:
        """A member says it holds model `h` of round `r`: fetch it in the background if it is new."""
        key = (r, h)
        if self.store.has(h) or h in self._fetching or key in self._looking:
            return
        expiry = self._not_on_chain.get(key)
        if expiry is not None and expiry > time.monotonic():
            self.on_dropped("announce_not_on_chain")
            return
        if len(self._looking) >= MAX_LOOKUPS:
            self.on_dropped("announce_busy")
            return
        self._looking.add(key)
        task = asyncio.ensure_future(self._fetch_announced(peer, r, h))
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def _fetch_announced(self, peer: bytes, r: int, h: bytes) -> None:
        try:
            confirmed = await self._on_chain(r, h)
        finally:
            self._looking.discard((r, h))
        if not confirmed:
            self._not_on_chain[(r, h)] = time.monotonic() + NOT_ON_CHAIN_TTL
            self._not_on_chain.move_to_end((r, h))
            while len(self._not_on_chain) > NOT_ON_CHAIN_KEPT:
                self._not_on_chain.popitem(last=False)
            return
        try:
            await self.fetch_from([peer], h, r)
        except SwarmError as exc:  # e.g. the disk is full: the round loop will pull again
            log.error("round %d: keeping model 0x%s.. failed: %s", r, h.hex()[:12], exc)

    async def _on_chain(self, r: int, h: bytes) -> bool:
        try:
            info = await self.round_info(r)
        except SwarmError:  # e.g. a round the chain has not reached
            return False
        if info.merged_hash != h:
            log.info("ignoring announce of 0x%s.. for round %d: not the model on chain", h.hex()[:12], r)
            return False
        return True

    # --- spreading and getting --------------------------------------------------------------
    async def spread(self, r: int, h: bytes, exclude: set[str]) -> None:
        """Announce `h` to `fanout` random members, at once."""
        targets = [a for a in self.peers.others() if a not in exclude]
        random.shuffle(targets)
        await asyncio.gather(*(self._announce(a, r, h) for a in targets[: self.fanout]))

    async def _announce(self, account: str, r: int, h: bytes) -> None:
        try:
            await self.node.announce(self.peers.key(account), round=r, model_hash=h, timeout=ANNOUNCE_TIMEOUT)
        except (TransportError, WireError) as exc:
            log.info("announce to %s failed: %s", account, exc)

    async def wait_for(self, h: bytes, r: int) -> None:
        """Give the gossip GOSSIP_GRACE to bring `h`, then pull from any holder until one serves it."""
        for _ in range(int(GOSSIP_GRACE / self.poll) + 1):
            if self.store.has(h):
                return
            await self.sleep(self.poll)
        delay = self.poll
        if not self.store.has(h):
            log.info(
                "round %d: model 0x%s.. not here after the gossip's grace; pulling it from peers",
                r,
                h.hex()[:12],
            )
        while not self.store.has(h):
            info = await self.round_info(r) if r >= 0 else None
            leader = info.leader if info else None
            # the leader first, unless we led the round (a restarted leader lost the model it merged)
            first = [self.peers.key(leader)] if leader in self.peers.others() else []
            others = [self.peers.key(a) for a in self.peers.others() if self.peers.key(a) not in first]
            random.shuffle(others)
            if await self.fetch_from(first + others, h, r):
                return
            await self.sleep(delay)
            delay = min(delay * 2, 5.0)

    async def fetch_from(self, peers: list[bytes], h: bytes, r: int) -> bool:
        """Fetch `h` from the first of `peers` that serves it; keep, pass on and store it."""
        if h in self._fetching:
            while h in self._fetching:
                await asyncio.sleep(0.05)
            return self.store.has(h)
        self._fetching.add(h)
        try:
            for peer in peers:
                try:
                    # The transport hashes as it receives and raises unless the bytes hash to h.
                    state = await self.node.fetch_model(peer, h, max_bytes=self.max_bytes)
                except (TransportError, WireError) as exc:
                    log.info("fetch 0x%s.. from a peer failed: %s", h.hex()[:12], exc)
                    continue
                log.info("round %d: got model 0x%s..", r, h.hex()[:12])
                # Serve it from memory and pass it on while it is written: the next hop does not
                # wait for this site's disk.
                self.store.remember(h, state)
                self.servable.add(h)
                # Round -1 is the initial model, which every site holds: nothing to pass on.
                exclude = {self.peers.members.get(peer, "")}
                onward = asyncio.ensure_future(self.spread(r, h, exclude) if r >= 0 else asyncio.sleep(0))
                put = functools.partial(self.store.put, state, h)
                try:
                    await asyncio.get_running_loop().run_in_executor(None, put)
                finally:
                    await onward
                self.on_stored()
                return True
            return False
        finally:
            self._fetching.discard(h)
