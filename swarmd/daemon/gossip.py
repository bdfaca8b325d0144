"""Dissemination of finalized models: announce, fetch what is announced, serve, pull as a fallback.

Only models the chain lists are ever served: a round's merged hash, the initial model, and the
plain committed updates this site holds (its own, and those it received as leader), which members
fetch by hash to audit a round (`swarmd.audit`). A masked update of a secure-aggregation round,
or a plain update behind one, is never served. A holder announces to its children in the round's
dissemination tree (`tree_order`: the leader at the root, each node with `fanout` children); a site
that hears an announce checks the hash on chain and fetches the model with cut-through: once the
stream starts it passes the announce on and serves the model onward as the chunks land (the
transport's `relay`; every receiver verifies the full hash). It keeps the model in memory and trains
from it while it is written to disk (`durable` waits for the file). A site that sees a finalization
but hears nothing pulls: first from the round's leader, then from any member. The tree spreads the
load; the pull guarantees delivery.

An announce costs its receiver a chain read, so announces are deduplicated and bounded: at most
MAX_LOOKUPS chain reads in flight, and an announce the chain did not confirm is remembered for
NOT_ON_CHAIN_TTL seconds; announces beyond that are dropped and counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field

import torch

from swarmd.codec import Digest, Manifest, encode
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
        self._fetching: dict[bytes, asyncio.Event] = {}  # models being fetched -> set when that ends
        self._writes: dict[bytes, asyncio.Future[Digest]] = {}  # models being written to disk
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
        if self.store.holds(h) or h in self._fetching or key in self._looking:
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
            info = await self._on_chain(r, h)
        finally:
            self._looking.discard((r, h))
        if info is None:
            self._not_on_chain[(r, h)] = time.monotonic() + NOT_ON_CHAIN_TTL
            self._not_on_chain.move_to_end((r, h))
            while len(self._not_on_chain) > NOT_ON_CHAIN_KEPT:
                self._not_on_chain.popitem(last=False)
            return
        # The announcer first; should it fail (e.g. its own download, which it served on as it arrived,
        # broke off), the leader and then any member.
        try:
            await self.fetch_from(self._sources(info.leader, first=peer), h, r, info.leader)
        except SwarmError as exc:  # the round loop will pull again
            log.error("round %d: getting model 0x%s.. failed: %s", r, h.hex()[:12], exc)

    async def _on_chain(self, r: int, h: bytes) -> RoundInfo | None:
        """Round r as the chain has it, if `h` is its merged model; else None."""
        try:
            info = await self.round_info(r)
        except SwarmError:  # e.g. a round the chain has not reached
            return None
        if info.merged_hash != h:
            log.info("ignoring announce of 0x%s.. for round %d: not the model on chain", h.hex()[:12], r)
            return None
        return info

    # --- spreading and getting --------------------------------------------------------------
    async def spread(self, r: int, h: bytes, leader: str | None) -> None:
        """Announce `h` to this site's children in round r's dissemination tree (`tree_children`), at
        once; a child that does not take the announce has its own children announced to instead.
        Without the round's leader (or when this site is not in the tree): `fanout` random members."""
        if leader is None or self.me not in self.peers.endpoints or leader not in self.peers.endpoints:
            targets = self.peers.others()
            random.shuffle(targets)
            await asyncio.gather(*(self._announce(a, r, h) for a in targets[: self.fanout]))
            return
        order = tree_order(leader, list(self.peers.endpoints), r)
        await asyncio.gather(
            *(self._announce_down(order, a, r, h) for a in children(order, self.me, self.fanout))
        )

    async def _announce_down(self, order: list[str], account: str, r: int, h: bytes) -> None:
        if not await self._announce(account, r, h):  # dead or silent: its subtree must not wait for it
            kids = children(order, account, self.fanout)
            await asyncio.gather(*(self._announce_down(order, a, r, h) for a in kids))

    async def _announce(self, account: str, r: int, h: bytes) -> bool:
        try:
            await self.node.announce(self.peers.key(account), round=r, model_hash=h, timeout=ANNOUNCE_TIMEOUT)
        except (TransportError, WireError, KeyError) as exc:
            log.info("announce to %s failed: %s", account, exc)
            return False
        return True

    @property
    def me(self) -> str:
        return self.peers.me

    async def wait_for(self, h: bytes, r: int) -> None:
        """Give the gossip GOSSIP_GRACE to bring `h` (all the time a fetch it started takes), then
        pull from any holder until one serves it."""
        give_up, polls = time.monotonic() + GOSSIP_GRACE, int(GOSSIP_GRACE / self.poll) + 1
        while not self.store.holds(h):
            fetching = self._fetching.get(h)
            if fetching is not None:
                await fetching.wait()
                continue
            left = give_up - time.monotonic()
            if left <= 0 or polls <= 0:
                break
            polls -= 1
            await self.sleep(min(self.poll, left))  # an announce's fetch nudges it awake
        delay = self.poll
        if not self.store.holds(h):
            log.info(
                "round %d: model 0x%s.. not here after the gossip's grace; pulling it from peers",
                r,
                h.hex()[:12],
            )
        while not self.store.holds(h):
            info = await self.round_info(r) if r >= 0 else None
            leader = info.leader if info else None
            if await self.fetch_from(self._sources(leader), h, r, leader):
                return
            await self.sleep(delay)
            delay = min(delay * 2, 5.0)

    def _sources(self, leader: str | None, first: bytes | None = None) -> list[bytes]:
        """Whom to fetch from: `first`, the round's leader (unless we led it: a restarted leader lost
        the model it merged), then every other member in random order."""
        keys = [first] if first is not None else []
        if leader in self.peers.others() and self.peers.key(leader or "") not in keys:
            keys.append(self.peers.key(leader or ""))
        others = [self.peers.key(a) for a in self.peers.others() if self.peers.key(a) not in keys]
        random.shuffle(others)
        return keys + others

    async def fetch_from(self, peers: list[bytes], h: bytes, r: int, leader: str | None = None) -> bool:
        """Fetch `h` from the first of `peers` that serves it, serving it onward as it arrives
        (announced down round r's tree once the stream starts); keep it in memory, and write it to disk
        in the background (`durable` waits for that). False when no peer served it."""
        fetching = self._fetching.get(h)
        if fetching is not None:
            await fetching.wait()
            return self.store.holds(h)
        self._fetching[h] = asyncio.Event()
        announced = False

        def announce() -> None:  # the stream has started: the next hops fetch from us meanwhile
            nonlocal announced
            if r >= 0 and not announced:  # round -1 is the initial model, which every site holds
                announced = True
                self._in_background(self.spread(r, h, leader))

        try:
            for peer in peers:
                try:
                    # The transport hashes as it receives and raises unless the bytes hash to h.
                    state = await self.node.fetch_model(peer, h, max_bytes=self.max_bytes, relay=announce)
                except (TransportError, WireError) as exc:
                    log.info("fetch 0x%s.. from a peer failed: %s", h.hex()[:12], exc)
                    continue
                log.info("round %d: got model 0x%s..", r, h.hex()[:12])
                self.keep(h, state)
                if not announced:
                    announce()
                self.on_stored()
                return True
            return False
        finally:
            self._fetching.pop(h).set()

    # --- the disk, behind the round's back -----------------------------------------------------------
    def keep(self, h: bytes, state: dict[str, torch.Tensor]) -> None:
        """Hold a model whose content hash this site computed or verified: served and trained from
        memory at once, written to disk behind the round's back (`durable` waits for the file)."""
        self.store.remember(h, state)
        self.servable.add(h)
        self._write_behind(h, state)

    def _write_behind(self, h: bytes, state: dict[str, torch.Tensor]) -> None:
        put = functools.partial(self.store.put, state, h)
        write = asyncio.ensure_future(asyncio.get_running_loop().run_in_executor(None, put))
        self._writes[h] = write

        def done(fut: asyncio.Future[Digest]) -> None:
            if self._writes.get(h) is fut:
                del self._writes[h]
            if not fut.cancelled() and fut.exception() is not None:  # e.g. a full disk (reported)
                log.error("cannot store model 0x%s..: %s; kept in memory", h.hex()[:12], fut.exception())

        write.add_done_callback(done)

    async def durable(self, h: bytes) -> None:
        """Until model `h`, which this site holds, is on disk: what relies on the file (a commit of
        an update trained from it) waits here, training does not. Raises StoreError if it cannot be
        written (a full disk: reported by the store)."""
        write = self._writes.get(h)
        if write is not None:
            with contextlib.suppress(SwarmError, OSError):  # logged when it failed; tried again below
                await asyncio.shield(write)
        if self.store.has(h) or not self.store.holds(h):
            return
        state = self.store.get(h)
        await asyncio.get_running_loop().run_in_executor(None, functools.partial(self.store.put, state, h))

    def _in_background(self, aw: Awaitable[None]) -> None:
        task = asyncio.ensure_future(aw)
        self._background.add(task)
        task.add_done_callback(self._background.discard)


def tree_order(leader: str, members: list[str], r: int) -> list[str]:
    """Round r's dissemination tree, flattened: the leader at the root, then the other members in address
    order rotated by r (so a different site relays each round); node i's children are i*k+1 .. i*k+k."""
    others = sorted((a for a in set(members) if a != leader), key=str.lower)
    turn = r % len(others) if others else 0
    return [leader, *others[turn:], *others[:turn]]


def children(order: list[str], account: str, fanout: int) -> list[str]:
    """`account`'s children in the flattened tree `order`, each node with `fanout` of them."""
    if account not in order or fanout < 1:
        return []
    i = order.index(account)
    return order[i * fanout + 1 : i * fanout + 1 + fanout]
