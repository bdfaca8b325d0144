"""A sharded round (`[exchange] topology = "sharded"`): every committer merges some leaves of the model.

The elected leader coordinates and finalizes but no longer receives every update. Each committer (the
leader too) serves its update's leaves by hash from the moment commits close, before the election, and
fetches the leaves it owns under the plan (the opening one, then the leader's) from every other
committer (reduce-scatter: each checked against the sender's on-chain Merkle root and validated),
merges them with the task's rule, and, once the plan lists every merged leaf's hash, fetches the merged
leaves from their owners and assembles the merged model (all-gather). The leader pushes a new plan
(`shardplan.Coordinator`) to each committer as soon as it answered the one before, an unchanged one
about ten times a second; each answer is that committer's status. Once the leader holds the merged
model it finalizes its content hash as in the leader topology; the others hold the same bytes already
(a site whose copy hashes otherwise fetches the finalized model by gossip, as ever). docs/protocol.md
"Sharded rounds".
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from swarmd.codec import Digest, Manifest, encode
from swarmd.daemon.accounting import HASH_MISMATCH, exclusion_reason, finalize_outcomes
from swarmd.daemon.leader import LeaderSide
from swarmd.daemon.shardplan import Coordinator, opening_plan
from swarmd.daemon.shardwork import Committed, Leaf, ShardWork
from swarmd.daemon.state import Phase
from swarmd.errors import HashMismatch, PeerRejected, TransportError, WireError
from swarmd.ledger import RoundInfo, RoundStatus
from swarmd.merge import rule_for
from swarmd.merge.shards import Assembly, ShardLayout, merkle_root
from swarmd.task import WeightKind
from swarmd.transport import PeerId, Refusal, SecAggHeader, SecAggTopic, Verdict
from swarmd.transport.shards import (
    BadShardMessage,
    Leaves,
    LeavesAsk,
    Plan,
    ShardMessage,
    Status,
    UpdateAsk,
    UpdateHash,
    decode_shard_msg,
)

log = logging.getLogger("swarmd.shards")

CYCLE = 0.1  # seconds between two pushes of the same plan to a committer whose status did not change
OWNER_IDLE = 0.5  # seconds the owner loop sleeps unless woken (a piece, a plan, a merge)
HOLD = 0.5  # seconds a committer holds its answer to a plan until its status changes (a long poll)
OPEN_HOLD = 0.5  # seconds a committer holds a leaves question about a round it has not opened yet
ASK_TIMEOUT = 10.0  # seconds for a plan push or a leaf-list question to be answered (a busy 2-core box
# answered one in over 2 s)
CHAIN_EVERY = 1.0  # seconds between the leader's reads of the chain while it coordinates
FETCH_TIMEOUT = 10.0  # seconds for a peer to start serving a leaf (a dead owner's is tried elsewhere)
PER_PEER = 8  # leaves fetched from one peer at a time: each costs two round trips before its bytes flow,
# which on a busy link wait behind its queue (100 Mbit/s, N = 3: a phase took 1.7 s with 8, 1.8 with 3)
GATHER_GRACE = 20.0  # seconds a committer's gather may go on after the finalize


def log_crash(what: str, task: asyncio.Task[None]) -> None:
    """A background loop that died of an error says so (its round then ends by the chain's clock)."""
    if not task.cancelled() and task.exception() is not None:
        log.error("%s failed: %r", what, task.exception())


@dataclass
class Pushes:
    """The leader's plan pushes: the one in flight to each committer, the last one sent (epoch, when),
    and the last answer. A committer holds its answer until its status changes (HOLD), so an answer
    with news is followed by the next push at once: the leader hears of each merged leaf within a round
    trip, not a cycle. A new plan goes at once, even while the committer holds its answer to an older
    one; an unchanged plan to an unchanged committer (one not in the round yet answers at once) after
    CYCLE."""

    asks: dict[str, asyncio.Task[tuple[bool, Status | None]]] = field(default_factory=dict)
    sent: dict[str, tuple[int, float]] = field(default_factory=dict)
    answers: dict[str, Status | None] = field(default_factory=dict)
    news: set[str] = field(default_factory=set)  # committers whose last answer changed: asked again at once

    def answered(self, site: str, status: Status | None) -> None:
        if site not in self.answers or status != self.answers[site]:
            self.news.add(site)
        self.answers[site] = status

    def pushed(self, site: str, epoch: int, now: float) -> None:
        self.sent[site] = (epoch, now)
        self.news.discard(site)

    def due(self, site: str, epoch: int, now: float) -> bool:
        last = self.sent.get(site)
        if last is None or last[0] < epoch:
            return True
        return site not in self.asks and (site in self.news or now - last[1] >= CYCLE)

    def next_due(self, now: float) -> float:
        """Seconds until an answer is to be read or a committer is due its next push (at most CYCLE)."""
        if any(task.done() for task in self.asks.values()) or self.news - set(self.asks):
            return 0.0  # answered while the coordinator was busy elsewhere: its wake is gone
        waits = [t + CYCLE - now for site, (_, t) in self.sent.items() if site not in self.asks]
        return max(0.0, min([CYCLE, *waits]))


class ShardSide(LeaderSide):
    """The sharded topology's committer and leader sides, and its answers to peers."""

    _shards: ShardWork | None = None
    _shard_owner: asyncio.Task[None] | None = None  # the owner loop of the work opened before the election
    _shard_serve: dict[bytes, tuple[int, Leaf]] | None = None
    _shard_wake: asyncio.Event | None = None
    _shard_told: Status | None = None  # the status we last answered the leader's plan with
    _leaf_hashes: tuple[bytes, list[Digest]] | None = None  # (update hash, its leaf hashes), from the commit

    @property
    def sharded(self) -> bool:
        return self.task.exchange.topology == "sharded"

    async def commitment(self, update_hash: Digest) -> Digest:
        """What this site commits to for its stored update: the update's content hash, or under the
        sharded topology the Merkle root of its leaves."""
        if not self.sharded:
            return update_hash
        if self._leaf_hashes is None or self._leaf_hashes[0] != update_hash:
            update = self.store.get(update_hash)
            leaves = self.task.exchange.leaves
            hashes = await asyncio.to_thread(lambda: ShardLayout(update, leaves).hashes(update))
            # Kept for the round's work, which serves the leaves by these hashes: opened once commits
            # close, on the exchange's path, it then need not hash the 28 MB again.
            self._leaf_hashes = (update_hash, hashes)
        return merkle_root(self._leaf_hashes[1])

    async def store_update(self, update: Mapping[str, torch.Tensor]) -> Digest:
        """Store a trained update (hash, write, fsync: off the loop), and under the sharded topology hash
        its leaves for the commitment on a second thread meanwhile: the last committer's commit, which
        every site waits for, then needs no pass over the update of its own. A masked update (secure
        aggregation) is committed instead: its leaves are hashed when it is made."""
        put = asyncio.to_thread(self.store.put, update)
        if not self.sharded or self.secure:
            return await put
        leaves = self.task.exchange.leaves
        layout = asyncio.to_thread(lambda: ShardLayout(update, leaves).hashes(update))
        digest, hashes = await asyncio.gather(put, layout)
        self._leaf_hashes = (digest, hashes)
        return digest

    # --- the round ----------------------------------------------------------------------------------
    async def open_shards_early(self, r: int, info: RoundInfo) -> None:
        """Once commits have closed (we just revealed), start the reduce-scatter on the commits alone: the
        committers are fixed, and in the usual round every one of them reveals, so the election's
        transactions and the exchange overlap. `shard_round` carries the work on under the elected term
        when the revealed committers are these; otherwise it starts over, keeping the pieces."""
        if not self.sharded or (self._shards is not None and self._shards.round == r):
            return
        committed = {c.site: (c.update_hash, c.n_samples) for c in info.commits}
        base = self.store.get(info.base_hash)
        work = await self.open_work(r, -1, "", base, committed)
        self._shard_owner = self.start_owner(work)

    async def open_work(
        self, r: int, term: int, leader: str, base: Mapping[str, torch.Tensor], committed: Committed
    ) -> ShardWork:
        """The work of (r, term), serving our update's leaves from here on, on its opening plan."""
        own_hash = self.own_update(r)
        own = self.store.get(own_hash)
        is_diff = self.task.swarm.send == WeightKind.DIFF
        known = self._leaf_hashes[1] if self._leaf_hashes and self._leaf_hashes[0] == own_hash else []
        leaves = self.task.exchange.leaves
        work = await asyncio.to_thread(
            ShardWork, r, term, self.me, leader, base, own, committed, is_diff, leaves, own_hashes=known
        )
        earlier = self._shards
        if earlier is not None and earlier.round == r:  # pieces of a term before, or of the early start
            work.inherit(earlier)
        self._shard_serve = {h: v for h, v in (self._shard_serve or {}).items() if v[0] >= r - 1}
        self._shard_serve.update({h: (r, leaf) for h, leaf in work.own_leaves().items()})
        self._shards = work
        work.adopt(opening_plan(r, term, list(committed), work.layout.count))
        self.wake()  # a leaves question held until we opened the round (`until_opened`) is answered now
        return work

    def start_owner(self, work: ShardWork) -> asyncio.Task[None]:
        owner = asyncio.ensure_future(self.own_shards(work))
        owner.add_done_callback(functools.partial(log_crash, f"round {work.round}: the shard owner loop"))
        return owner

    def close_early_shards(self) -> None:
        """Stop the owner loop of a work opened before an election that never came (round abandoned)."""
        owner, self._shard_owner = self._shard_owner, None
        if owner is not None:
            owner.cancel()
        if self._shards is not None and self._shards.term == -1:
            self._shards.over = True

    async def shard_round(self, r: int, info: RoundInfo, base: Mapping[str, torch.Tensor]) -> None:
        """Play term `info.term` of sharded round r until it ends (the leader: until it finalized)."""
        self.set_phase(Phase.EXCHANGE, r)
        committed = {c.site: (c.update_hash, c.n_samples) for c in info.commits if info.has_revealed(c.site)}
        leader = info.leader or ""
        early, owner = self._shards, self._shard_owner
        self._shard_owner = None
        if early is not None and owner is not None and early.opened_early(r, committed):
            early.retarget(info.term, leader)  # the loop and its fetches go on: nothing is asked twice
            early.adopt(opening_plan(r, info.term, list(committed), early.layout.count))
            work = early
        else:
            if owner is not None:
                owner.cancel()  # a committer did not reveal: its pieces go, the others' stay (inherit)
            work = await self.open_work(r, info.term, leader, base, committed)
            owner = self.start_owner(work)
        try:
            if leader == self.me:
                await self.coordinate(r, info, work)
            else:
                await self.until_term_ends(r, info.term, work)
        finally:
            work.over = True
            owner.cancel()
            await asyncio.wait({owner}, timeout=ASK_TIMEOUT)  # never hangs the round on a stuck owner

    async def until_term_ends(self, r: int, term: int, work: ShardWork) -> None:
        """A committer keeps its owner duties (a dead owner's leaves may come its way) until the chain
        shows the term over: finalized, or a new leader. A gather under way when the leader finalized
        (the leader gathers first, and finalizes as soon as it has) is given GATHER_GRACE to finish:
        the model is then in this site's store, and no one sends it the whole model again."""
        while True:
            now = await self.chain(self.ledger.round, r)
            if now.status != RoundStatus.ELECTED or now.term != term:
                break
            if await self.reelect_if_due(r, now.leader):
                return
            await self.until_next_head()
        if now.status != RoundStatus.FINALIZED or work.plan is None or work.plan.merged is None:
            return
        until = time.monotonic() + GATHER_GRACE
        while work.gathered is None and time.monotonic() < until:
            self.checkpoint()
            await self.wait_wake(0.5)

    async def reelect_if_due(self, r: int, leader: str | None) -> bool:
        raise NotImplementedError  # RoundDriver's (rounds.py)

    async def wait_wake(self, seconds: float) -> None:
        """Until `wake()` or `seconds`. Every waiter sees a wake (each holds the event of its time), and
        `asyncio.wait` never swallows a cancellation (3.11's `wait_for` can, when both come at once)."""
        if self._shard_wake is None:
            self._shard_wake = asyncio.Event()
        waiter = asyncio.ensure_future(self._shard_wake.wait())
        try:
            await asyncio.wait({waiter}, timeout=seconds)
        finally:
            waiter.cancel()

    def wake(self) -> None:
        woken, self._shard_wake = self._shard_wake, asyncio.Event()
        if woken is not None:
            woken.set()

    # --- owner: fetch, check, merge, gather ----------------------------------------------------------
    async def own_shards(self, work: ShardWork) -> None:
        fetching: dict[str, asyncio.Task[None]] = {}
        gather: asyncio.Task[None] | None = None
        try:
            while not work.over:
                for sender in work.senders():
                    busy = sender in fetching and not fetching[sender].done()
                    if sender != self.me and not busy and work.missing(sender) and sender not in work.failed:
                        fetching[sender] = asyncio.ensure_future(self.fetch_leaves(work, sender))
                merging = work.to_merge()
                for i in merging:
                    rule = lambda: rule_for(self.task.swarm)  # noqa: E731  # a fresh rule per leaf
                    digest, leaf = await asyncio.to_thread(work.merge, i, rule)
                    self.serve_leaf(work.round, digest, leaf)
                if merging:
                    self.wake()  # our status changed: a held answer to the leader goes now
                    continue  # what came in while we merged woke no one: look again before sleeping
                plan = work.plan
                idle = gather is None or gather.done()
                if plan is not None and plan.merged is not None and idle and work.gathered is None:
                    gather = asyncio.ensure_future(self.gather(work))
                await self.wait_wake(OWNER_IDLE)
        finally:
            for task in [*fetching.values(), *([gather] if gather else [])]:
                task.cancel()

    def serve_leaf(self, r: int, digest: bytes, leaf: Leaf) -> None:
        if self._shard_serve is not None:
            self._shard_serve[digest] = (r, leaf)

    async def fetch_leaves(self, work: ShardWork, sender: str) -> None:
        """Fetch the leaves this site owns from `sender`'s update, each checked, until none is missing,
        the sender is refused, or the plan no longer needs it. A transport failure is retried."""
        delay = 0.05  # most often the sender has not opened the round yet: it will in a few ms
        while work.missing(sender) and sender not in work.failed and sender in work.senders():
            try:
                key = self.peers.key(sender)
                if sender not in work.lists:
                    # The answer does not depend on the term; before the election (-1) we say 0.
                    ask = LeavesAsk(work.round, max(work.term, 0))
                    answer = await self.ask_shards(key, work.round, ask)
                    if not isinstance(answer, Leaves) or answer.round != work.round:
                        raise BadShardMessage(f"answered a leaves question with {answer.KIND}")
                    if not work.check_list(sender, answer.hashes):
                        log.warning("round %d: %s's leaf hashes are not its commitment", work.round, sender)
                        break
                hashes = work.lists[sender]

                async def one(i: int, key: PeerId = key, hashes: tuple[bytes, ...] = hashes) -> None:
                    piece = await self.fetch_leaf(key, hashes[i])
                    if await asyncio.to_thread(work.check_piece, sender, i, piece):
                        self.wake()

                await self.in_turn([functools.partial(one, i) for i in work.missing(sender)])
            except HashMismatch as exc:
                log.warning("round %d: a leaf of %s: %s", work.round, self.names.label(sender), exc)
                work.failed[sender] = HASH_MISMATCH
            except (TransportError, WireError, KeyError) as exc:
                log.info("round %d: leaves of %s: %s; retrying", work.round, self.names.label(sender), exc)
                if isinstance(exc, KeyError):
                    await self.refresh_members()
                await asyncio.sleep(delay)
                # A sender that has not opened the round yet will within a few ms of its next chain read
                # (our question nudged it): asked again at the same short pace, not backed off from.
                if not (isinstance(exc, PeerRejected) and exc.reason == Refusal.NOT_READY):
                    delay = min(delay * 2, 2.0)
        self.wake()

    async def fetch_leaf(self, peer: PeerId, h: bytes) -> Leaf:
        max_bytes = self.task.swarm.max_update_bytes
        return await self.node.fetch_model(peer, h, max_bytes=max_bytes, timeout=FETCH_TIMEOUT)

    @staticmethod
    async def in_turn(calls: Sequence[Callable[[], Awaitable[None]]], width: int = PER_PEER) -> None:
        """Run the calls, `width` at a time (one peer's leaves: the link stays busy between two), each to
        its end; then raise the first failure. A failure does not leave the others running behind the
        caller's retry, which would fetch their leaves a second time meanwhile."""
        turn = asyncio.Semaphore(width)

        async def run(call: Callable[[], Awaitable[None]]) -> None:
            async with turn:
                await call()

        ended = await asyncio.gather(*(run(c) for c in calls), return_exceptions=True)
        failed = [x for x in ended if isinstance(x, BaseException)]
        if failed:
            raise failed[0]

    async def gather(self, work: ShardWork) -> None:
        """All-gather: the merged leaves, ours from memory and the others' from their owners (the latest
        plan's, when one died), each put into the merged model as it lands (`Assembly`: copied in place
        and hashed as the leaves before it are in), then the model, stored under its content hash."""
        got: dict[bytes, Leaf] = {h: leaf for _, h, leaf in work.merged.values()}
        asm: Assembly | None = None
        planned: tuple[bytes, ...] = ()
        puts: list[asyncio.Future[None]] = []  # off the fetches' path: a put does not hold a fetch slot
        while True:
            plan = work.plan
            if plan is None or plan.merged is None:
                await self.wait_wake(0.5)
                continue
            if asm is None or planned != plan.merged:  # a plan over another include: start over
                asm, planned = Assembly(work.layout, work.base), plan.merged
                held = [(i, got[h]) for i, h in enumerate(plan.merged) if h in got]
                puts.append(asyncio.ensure_future(asyncio.to_thread(asm.put_all, held)))
            by_owner: dict[str, list[tuple[int, bytes]]] = {}
            for i, (owner, h) in enumerate(zip(plan.owners, plan.merged, strict=True)):
                if h not in got:
                    by_owner.setdefault(owner, []).append((i, h))

            async def one(owner: str, i: int, h: bytes, asm: Assembly = asm) -> None:
                got[h] = await self.fetch_leaf(self.peers.key(owner), h)
                puts.append(asyncio.ensure_future(asyncio.to_thread(asm.put, i, got[h])))

            calls = {o: [functools.partial(one, o, i, h) for i, h in ihs] for o, ihs in by_owner.items()}
            done = await asyncio.gather(*(self.in_turn(c) for c in calls.values()), return_exceptions=True)
            failed = [x for x in done if isinstance(x, BaseException)]
            if not failed:
                break
            if not all(isinstance(x, TransportError | WireError | KeyError) for x in failed):
                raise failed[0]
            log.info("round %d: gathering merged leaves: %s; retrying", work.round, failed[0])
            await self.wait_wake(0.5)
        await asyncio.gather(*puts)
        model, digest = asm.model, await asyncio.to_thread(asm.digest)
        # Held and served from memory at once, written behind: the leader finalizes without waiting for
        # its disk, and every other committer is writing the same bytes meanwhile.
        self.gossip.keep(digest, model)
        work.gathered = Digest(digest)
        work.gathered_include, work.gathered_owners = plan.include, len(set(plan.owners))
        log.info("round %d: assembled the merged model %s", work.round, work.gathered.short())
        self.wake()

    # --- leader: coordinate and finalize -------------------------------------------------------------
    async def coordinate(self, r: int, info: RoundInfo, work: ShardWork) -> None:
        self.journal.update(r, led=True)
        self.metrics.led()
        coord = Coordinator(r, info.term, list(work.committed), work.layout.count, self.me, time.monotonic())
        deadline_block, deadline, checked = self.deadline_block(info), False, 0.0
        pushes = Pushes()
        try:
            while work.gathered is None:
                self.checkpoint()
                epoch = coord.plan.epoch
                coord.observe(self.push_plan(work, coord, pushes), now=time.monotonic(), deadline=deadline)
                changed = coord.plan.epoch != epoch
                if changed:
                    log.info("round %d: plan %s", r, coord.describe())
                if coord.plan.include == ():
                    log.error("round %d: no update can be merged; not finalizing this term", r)
                    return
                if coord.plan.include is not None and self.state.phase == Phase.EXCHANGE:
                    self.set_phase(Phase.MERGE, r)  # decided: the owners merge, then everyone gathers
                if time.monotonic() - checked > CHAIN_EVERY:
                    checked = time.monotonic()
                    now = await self.chain(self.ledger.round, r)
                    if now.status != RoundStatus.ELECTED or now.term != info.term:
                        return
                    deadline = await self.block_number() >= deadline_block
                # A new plan is pushed at once; otherwise wait for an answer (it wakes us) or a push due.
                await self.wait_wake(0.0 if changed else pushes.next_due(time.monotonic()))
        finally:
            for task in pushes.asks.values():
                task.cancel()
        await self.finalize_sharded(r, info, work, coord)

    async def finalize_sharded(self, r: int, info: RoundInfo, work: ShardWork, coord: Coordinator) -> None:
        merged_hash = work.gathered
        assert merged_hash is not None  # coordinate() waited for it
        include = {a.lower() for a in work.gathered_include or ()}
        included = [a for a in work.committed if a.lower() in include]
        reasons = {
            a: exclusion_reason(label) for a, label in coord.excluded.items() if a.lower() not in include
        }
        self.set_phase(Phase.FINALIZE, r)
        log.info(
            "round %d: finalizing %s with %d of %d updates, sharded over %d owners (excluded: %s)",
            r,
            merged_hash.short(),
            len(included),
            len(work.committed),
            work.gathered_owners,
            {a: why for a, why in coord.excluded.items() if a.lower() not in include} or "none",
        )
        model_bytes = sum(t.numel() * t.element_size() for t in work.base.values())
        self.journal.note(r, model_bytes=model_bytes)  # for the benches: no fsync before the finalize
        outcomes = finalize_outcomes(info, included, [], reasons)
        await self.transact(self.ledger.finalize, r, merged_hash, outcomes)

    def push_plan(self, work: ShardWork, coord: Coordinator, pushes: Pushes) -> dict[str, Status | None]:
        """The answers that came in since the last call (None: an answer about another plan; no entry:
        none, or none within ASK_TIMEOUT), and the current plan sent to every live committer that is due
        one (`Pushes.due`) and not still answering an earlier one: a slow or dead site holds up no one
        else's plan."""
        plan, now = coord.plan, time.monotonic()
        if work.adopt(plan):
            self.wake()
        out: dict[str, Status | None] = {self.me: work.status()}
        for site in coord.live - {self.me}:
            task = pushes.asks.get(site)
            if task is not None and task.done():
                answered, status = pushes.asks.pop(site).result()
                if answered:
                    out[site] = status
                    pushes.answered(site, status)
            if pushes.due(site, plan.epoch, now):
                if (held := pushes.asks.get(site)) is not None:
                    held.cancel()  # its answer is about an older plan: the committer drops its hold
                task = asyncio.ensure_future(self.ask_status(site, plan))
                task.add_done_callback(lambda _: self.wake())  # the coordinator reads the answer at once
                pushes.asks[site] = task
                pushes.pushed(site, plan.epoch, now)
        return out

    async def ask_status(self, site: str, plan: Plan) -> tuple[bool, Status | None]:
        """(answered, its status for `plan`, or None for an answer about another round or term). A
        refusal counts as silence: the transport raises the same PeerRejected for a dead peer's
        handshake, and a live site refuses only a leader it does not know."""
        try:
            answer = await self.ask_shards(self.peers.key(site), plan.round, plan)
        except (TransportError, WireError, KeyError):
            return False, None
        ok = isinstance(answer, Status) and (answer.round, answer.term) == (plan.round, plan.term)
        return True, (answer if ok and isinstance(answer, Status) else None)

    async def ask_shards(self, peer: PeerId, r: int, msg: ShardMessage) -> ShardMessage:
        """One question on the `shards` topic; PeerRejected when refused (not ready, not a committer)."""
        body = await self.node.secagg(
            peer, round=r, topic=SecAggTopic.SHARDS, body=msg.encode(), timeout=ASK_TIMEOUT
        )
        return decode_shard_msg(body)

    # --- answers to peers ------------------------------------------------------------------------------
    async def on_secagg(self, peer: PeerId, header: SecAggHeader, body: bytes) -> bytes | Verdict:
        if header.topic != SecAggTopic.SHARDS:
            return await super().on_secagg(peer, header, body)
        sender = self.peers.members.get(peer)
        if sender is None:
            return Verdict(False, Refusal.NOT_MEMBER)
        try:
            msg = decode_shard_msg(body)
        except BadShardMessage as exc:
            self.metrics.rejection("shards_bad_message")
            return Verdict(False, Refusal.INVALID, str(exc))
        if isinstance(msg, UpdateAsk):
            return self.committed_update(msg.round)
        if isinstance(msg, LeavesAsk):
            await self.until_opened(msg.round)
        work = self._shards
        behind = work is None or getattr(msg, "round", None) != work.round
        if isinstance(msg, Plan) and (behind or (work is not None and msg.term > work.term)):
            # The leader is ahead of us: read the chain now, and say we hold nothing of its plan yet (an
            # answer, unlike a refusal, which the leader cannot tell from a dead peer's local failure).
            self.nudge()
            return Status(msg.round, msg.term, msg.epoch, (), {}, {}).encode()
        if work is None or behind:
            self.nudge()
            return Verdict(False, Refusal.NOT_READY, "no sharded round open here for that round")
        if sender not in work.committed:
            return Verdict(False, Refusal.NOT_COMMITTER, f"{sender} is not a revealed committer")
        if isinstance(msg, LeavesAsk):  # the same leaves whatever the term
            return Leaves(work.round, tuple(work.own_hashes)).encode()
        if isinstance(msg, Plan) and msg.term == work.term and sender == work.leader:
            if work.adopt(msg):
                self.wake()
            return (await self.news_for_leader(work, msg.epoch)).encode()
        if isinstance(msg, Plan):
            return Verdict(False, Refusal.INVALID, f"{sender} does not lead term {msg.term} here")
        return Verdict(False, Refusal.INVALID, f"a {msg.KIND} is not a question")

    async def until_opened(self, r: int) -> None:
        """An owner asks for our leaves of round r before we opened it: it has read the closing commit a
        few ms before us. Read the chain now and answer once we open it (up to OPEN_HOLD), instead of a
        refusal the owner would ask again after a pause, on every round's critical path."""
        until = time.monotonic() + OPEN_HOLD
        if self._shards is None or self._shards.round < r:
            self.nudge()
        while (self._shards is None or self._shards.round < r) and (left := until - time.monotonic()) > 0:
            await self.wait_wake(left)

    async def news_for_leader(self, work: ShardWork, epoch: int) -> Status:
        """Our status under plan `epoch`, once it differs from the one we last told the leader, or after
        HOLD, or when a newer plan came (a long poll: the leader asks again as soon as we answer, so it
        hears of a piece or a merged leaf at once, not on its next cycle)."""
        until = time.monotonic() + HOLD
        status = work.status()

        def hold() -> bool:
            current = work.plan is not None and work.plan.epoch == epoch
            return status == self._shard_told and current and not work.over

        while hold() and (left := until - time.monotonic()) > 0:
            await self.wait_wake(left)
            status = work.status()
        if status.epoch == epoch:  # an answer about a plan the leader has replaced is dropped there
            self._shard_told = status
        return status

    def committed_update(self, r: int) -> bytes | Verdict:
        """An auditor's question: the content hash of the update whose leaves' root we committed in round
        r (it fetches the update by it, as committed updates are served, and checks the root itself)."""
        rec = self.journal.rounds.get(r)
        h = rec.update_hash if rec is not None and rec.committed else None
        if h is None or h not in self.gossip.servable or not self.store.has(h):
            return Verdict(False, Refusal.NOT_FOUND, f"this site holds no committed update of round {r}")
        return UpdateHash(r, h).encode()

    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        held = (self._shard_serve or {}).get(model_hash)
        if held is not None:
            return encode(held[1])
        return super().serve_model(model_hash)
