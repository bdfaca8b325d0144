"""What every step of a round stands on: the chain thread, sleeps that a stop or a peer's message
ends early, waits that a stop abandons, phase bookkeeping, the member list (followed live: a removed
member is cut off within one chain poll), this site's own standing and its peers' names, and the pace
of the chain's blocks. `RoundDriver` (rounds.py) builds on it.

Chain calls run on one dedicated thread (web3 clients and nonces are not shared across threads);
training runs on another, so the event loop keeps serving peers throughout.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import ParamSpec, TypeVar

from swarmd.codec import Digest
from swarmd.daemon.exchange import Exchange
from swarmd.daemon.gossip import Gossip, Peers
from swarmd.daemon.membership import MembershipWatch, PeerNames
from swarmd.daemon.metrics import Metrics
from swarmd.daemon.ports import Trainer, Transport
from swarmd.daemon.state import DaemonState, Phase
from swarmd.daemon.store import Journal, ModelStore
from swarmd.errors import ChainUnavailable, CheckpointError, ContractRevert, LedgerError, StoreError
from swarmd.ledger import Ledger, Member, MemberStatus
from swarmd.ledger import errors as reverts
from swarmd.ledger.heads import HeadWatch
from swarmd.task import Task

log = logging.getLogger("swarmd.rounds")
P = ParamSpec("P")
T = TypeVar("T")
# Phases that belong to no round: neither timed per round nor recorded as a round's phase entry.
OUTSIDE_ROUNDS = frozenset({Phase.STARTING, Phase.WAITING, Phase.DONE, Phase.STOPPING})
NEXT_BLOCK_LIMIT_S = 10.0  # how long `next_block` waits for a block before going on anyway

# Reverts that mean another honest site got there first, or the round moved on meanwhile.
BENIGN_REVERTS: tuple[type[ContractRevert], ...] = (
    reverts.AlreadyCommitted,
    reverts.WrongRound,
    reverts.RoundNotOpen,
    reverts.NotElected,
    reverts.NotEnoughCommits,
    reverts.CommitWindowOpen,
    reverts.CommitsClosed,
    reverts.RevealWindowOpen,
    reverts.RevealClosed,
    reverts.AlreadyRevealed,
    reverts.LeaderTimeoutNotReached,
    reverts.NotLeader,
)


class StopRequested(Exception):
    """Raised at a safe point once a graceful stop was asked for."""


FOLLOW_AT_LEAST = 10.0  # seconds: the member list is read at least this often, new blocks or not
HEADS_SAFETY_S = 2.0  # with heads pushed, the longest wait between two reads while a term plays out


class BlockClock:
    """Seconds per block as this site watched the chain move: the contract counts its deadlines in
    blocks, the transport its timeouts in seconds. A sliding window, so a chain outage ages out."""

    def __init__(self, window: int = 64) -> None:
        self._seen: deque[tuple[int, float]] = deque(maxlen=window)

    def saw(self, block: int, at: float | None = None) -> None:
        if self._seen and block <= self._seen[-1][0]:
            return  # only a new block tells when blocks come
        self._seen.append((block, time.monotonic() if at is None else at))

    @property
    def latest(self) -> int | None:
        """The highest block seen, None before the first."""
        return self._seen[-1][0] if self._seen else None

    def seconds_per_block(self) -> float | None:
        """None until two blocks were seen."""
        if len(self._seen) < 2:
            return None
        (b0, t0), (b1, t1) = self._seen[0], self._seen[-1]
        return (t1 - t0) / (b1 - b0)


class RoundPlumbing:
    """The driver's collaborators and the helpers each round step uses."""

    def __init__(
        self,
        *,
        task: Task,
        ledger: Ledger,
        node: Transport,
        trainer: Trainer,
        store: ModelStore,
        journal: Journal,
        state: DaemonState,
        metrics: Metrics,
        poll_interval: float,
        eval_list: Path | None = None,
        heads_url: str = "",
    ) -> None:
        self.task = task
        self.ledger = ledger
        self.node = node
        self.trainer = trainer
        self.store = store
        self.journal = journal
        self.state = state
        self.metrics = metrics
        self.poll = poll_interval
        self.eval_list = eval_list
        self.me = state.address
        self.stopping = asyncio.Event()
        self._nudged = asyncio.Event()  # a peer's message suggests the chain moved: poll now
        self.exchange: Exchange | None = None  # open while this site leads a term
        self.peers = Peers(self.me)
        self.membership = MembershipWatch(state.site)
        self.names = PeerNames()
        self._named: set[str] = set()  # the active accounts when names were last read from the chain
        self.gossip = Gossip(
            node=node,
            store=store,
            peers=self.peers,
            fanout=task.swarm.fanout,
            max_bytes=task.swarm.max_update_bytes,
            round_info=lambda r: self.chain(self.ledger.round, r),
            sleep=self.sleep,
            poll=poll_interval,
            on_stored=self.nudge,
            on_dropped=lambda reason: self.metrics.rejection(reason),
        )
        self.blocks = BlockClock()
        self._peers_set = False  # the node has been given the member list once
        self.heads = HeadWatch(heads_url, self.saw_head, self.heads_link) if heads_url else None
        if self.heads is not None:
            state.chain_heads = "lost"  # until the first subscription is up
        self._chain_pool = ThreadPoolExecutor(1, thread_name_prefix="chain")
        # The member list, read after every new block by `follow_members`, is the dearest read (every
        # member's record); on a thread of its own the round's reads never queue behind it.
        self._members_pool = ThreadPoolExecutor(1, thread_name_prefix="members")
        self._member_reads = 0  # member-list reads started so far
        self._members_applied = 0  # the latest-started read whose answer was applied
        self._train_pool = ThreadPoolExecutor(1, thread_name_prefix="train")

    async def chain(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
        """Run a ledger call on the chain thread; retry with backoff while the RPC is unreachable."""
        return await self._chain_on(self._chain_pool, functools.partial(fn, *args, **kwargs))

    async def _chain_on(self, pool: ThreadPoolExecutor, call: Callable[[], T]) -> T:
        delay = 0.5
        loop = asyncio.get_running_loop()
        while True:
            try:
                result = await loop.run_in_executor(pool, call)
                if not self.state.chain_ok:
                    log.info("chain reachable again")
                self.state.chain_ok = True
                return result
            except ChainUnavailable as exc:
                self.state.chain_ok = False
                log.warning("chain unreachable (%s); retrying in %.1fs", exc, delay)
                await self.sleep(delay, wakeable=False)
                delay = min(delay * 2, 10.0)

    async def transact(self, fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T | None:
        """A chain transaction whose benign revert (another site won the race) returns None."""
        try:
            return await self.chain(fn, *args, **kwargs)
        except BENIGN_REVERTS as exc:
            log.info("%s: %s (another site got there first)", fn.__name__, exc.error_name)
            return None

    async def sleep(self, seconds: float, *, wakeable: bool = True) -> None:
        """Sleep between chain polls; raise StopRequested when a stop is requested.

        A wakeable sleep also ends at `nudge()`: peers' messages (an announce, an update sent
        to us as leader) show that the chain moved before our next poll would."""
        events = [self.stopping, self._nudged] if wakeable else [self.stopping]
        waiters = [asyncio.ensure_future(e.wait()) for e in events]
        try:
            await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
        if self.stopping.is_set():
            raise StopRequested
        if wakeable:
            self._nudged.clear()

    async def until_next_head(self) -> None:
        """Between two reads of the chain while a term plays out (waiting for the finalize, or for the
        leader's timeout): nothing read then changes without a block, so with heads pushed by the node
        the next head (or a peer's nudge) ends the wait, and the timer is only a safety net. Polling
        instead cost every waiting site two reads a poll, new blocks or not."""
        await self.sleep(HEADS_SAFETY_S if self.state.chain_heads == "pushed" else self.poll)

    def nudge(self) -> None:
        self._nudged.set()

    def saw_head(self, block: int) -> None:
        """A new block, pushed by the node (`chain.ws_url`): whatever the round waits for may be in it."""
        self.blocks.saw(block)
        self.nudge()

    def heads_link(self, live: bool) -> None:
        self.state.chain_heads = "pushed" if live else "lost"

    def checkpoint(self) -> None:
        if self.stopping.is_set():
            raise StopRequested

    def set_phase(self, phase: Phase, r: int | None = None) -> None:
        if phase == self.state.phase and (r is None or r == self.state.round):
            return
        prev, prev_round = self.state.phase, self.state.round
        now = time.time()
        elapsed = now - self.state.phase_since
        self.metrics.observe_phase(prev.value, elapsed)
        changes: dict[int, dict[str, dict[str, float]]] = {}  # one journal save per round touched
        if prev_round >= 0 and prev not in OUTSIDE_ROUNDS:
            phases = dict(self.journal.get(prev_round).phases)
            phases[prev.value] = round(phases.get(prev.value, 0.0) + elapsed, 4)
            changes[prev_round] = {"phases": phases}
        self.state.enter(phase, r)
        entered = self.journal.get(self.state.round).entered
        if self.state.round >= 0 and phase not in OUTSIDE_ROUNDS and phase.value not in entered:
            changes.setdefault(self.state.round, {})["entered"] = {**entered, phase.value: round(now, 4)}
        for rr, fields in changes.items():
            self.journal.note(rr, **fields)  # written with the round's next change of state
        if phase in OUTSIDE_ROUNDS:
            self.journal.flush()  # a wait that may be long (or the end): what was noted goes to disk now
        self.metrics.set_round(self.state.round)
        log.info("round %s: %s", self.state.round, phase.value)

    def own_update(self, r: int) -> Digest:
        """The hash of our update of round `r`, which the journal holds once we committed."""
        h = self.journal.get(r).update_hash
        if h is None:
            raise CheckpointError(f"round {r}: the journal names no update of ours")
        return h

    async def block_number(self) -> int:
        block = await self.chain(self.ledger.block_number)
        self.blocks.saw(block)
        return block

    async def next_block(self, limit_s: float = NEXT_BLOCK_LIMIT_S) -> None:
        """Until the chain mines a block after the current one, or `limit_s`: a transaction that was
        still pending when we read (and that a revert already counted) is readable only then."""
        start = await self.block_number()
        give_up = time.monotonic() + limit_s
        while time.monotonic() < give_up and await self.block_number() == start:
            await self.sleep(self.poll)

    async def refresh_members(self, *, aside: bool = False) -> None:
        """Re-read the member list: the peers the transport accepts, this site's own standing, and the
        names of members not seen before. `aside`: on the members' own thread (`follow_members`), so the
        round's reads do not wait for it."""
        started = self.member_read()
        pool = self._members_pool if aside else self._chain_pool
        await self.apply_members(await self._chain_on(pool, self.ledger.members), started)

    def member_read(self) -> int:
        """Number a member-list read about to start, for `apply_members`."""
        self._member_reads += 1
        return self._member_reads

    async def apply_members(self, members: list[Member], started: int) -> None:
        """Take the member list that read number `started` got, unless a read that started after it was
        applied already: this one may predate a removal that one saw (the follower's reads run aside)."""
        if started < self._members_applied:
            return
        self._members_applied = started
        active = [m for m in members if m.status is MemberStatus.ACTIVE]
        me = next((m.status for m in members if m.account == self.me), MemberStatus.NONE)
        if self.membership.update(me):
            self.state.membership = self.membership.standing.value
            self.metrics.membership(self.membership.standing.value)
        await self._refresh_names(active)
        before = self.peers.endpoints
        self.peers.update(active)
        if self.peers.endpoints == before and self._peers_set:
            return
        self._peers_set = True
        if gone := set(before) - set(self.peers.endpoints):
            gone_names = ", ".join(sorted(self.names.label(a) for a in gone))
            log.warning("members removed: %s; closing their sessions", gone_names)
        # The node drops removed members' connections and fails their open streams: from here on
        # they get no answer, no model and no slot.
        others = [m for m in active if m.account != self.me]
        self.node.set_peers(
            {m.curve_key: m.endpoint for m in others},
            {m.curve_key: self.names.label(m.account) for m in others},
        )

    async def _refresh_names(self, active: list[Member]) -> None:
        """Read the site names from the chain's join events when an active member is new to us."""
        accounts = {m.account for m in active}
        if accounts <= self._named:
            return
        self.names.update(await self.chain(self.ledger.site_names))
        self._named |= accounts
        self.state.peer_names = self.names.as_dict()

    async def until_active(self) -> None:
        """Return once this site is an active member; until then (pending admission, never joined,
        removed) wait in phase `waiting`, re-reading the chain every poll. Training needs no restart.
        The first read is always fresh: a read made in the last poll may predate a removal."""
        await self.refresh_members()
        while not self.membership.active:
            self.set_phase(Phase.WAITING)
            await self.sleep(self.poll)
            await self.refresh_members()

    async def interruptible(self, aw: Awaitable[T]) -> T:
        """Await `aw`, abandoning (cancelling) it and raising StopRequested as soon as a stop is asked
        for: a fetch from an unresponsive peer must not hold a SIGTERM for the transport's timeouts."""
        work = asyncio.ensure_future(aw)
        stop = asyncio.ensure_future(self.stopping.wait())
        try:
            await asyncio.wait({work, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            abandoned = not work.done()
            if abandoned:
                work.cancel()
                await asyncio.gather(work, return_exceptions=True)
        if abandoned:
            raise StopRequested
        return work.result()

    async def follow_members(self) -> None:
        """Apply membership changes within one chain poll, whatever phase the round is in (a round
        can last hours), and keep the block clock running. Runs beside the round loop until a stop.

        While heads are pushed (`chain.ws_url`) the clock runs on them, and a poll with no new block
        since the last read skips it: members change only in a block, and the member list is the
        dearest read there is (every member's record, 10-40 ms here), on the thread the round's reads
        wait for. At least one read every FOLLOW_AT_LEAST seconds all the same."""
        last_head: int | None = None
        last_read = float("-inf")  # monotonic time of the last read
        while not self.stopping.is_set():
            pushed = self.heads is not None and self.heads.connected
            head = self.blocks.latest
            if not pushed or head != last_head or time.monotonic() - last_read > FOLLOW_AT_LEAST:
                try:
                    await self.refresh_members(aside=True)
                    if not pushed:
                        await self.block_number()
                    last_head, last_read = head, time.monotonic()
                except StopRequested:
                    return
                except LedgerError as exc:  # a chain error the round loop will also see: try next poll
                    log.info("following members: %s", exc)
            # not self.sleep(): it would swallow nudges meant for the round loop
            await asyncio.sleep(self.poll)

    def close(self) -> None:
        with contextlib.suppress(StoreError):  # a full disk: only the last phases' times are lost
            self.journal.flush()
        self._chain_pool.shutdown(wait=False, cancel_futures=True)
        self._members_pool.shutdown(wait=False, cancel_futures=True)
        self._train_pool.shutdown(wait=False, cancel_futures=True)
