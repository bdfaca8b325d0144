"""The round state machine: train, commit, elect, exchange, merge, finalize, disseminate.

This is the only module that knows the order of a round. The chain is the source of truth: each
step re-reads the round from the ledger, and the journal only records what this site did (so a
restart resumes mid-round without redoing a commit or losing an update). Chain calls run on one
dedicated thread (web3 clients and nonces are not shared across threads); training runs on
another, so the event loop keeps serving peers throughout. Spreading the merged model is
`gossip.Gossip`'s job; this module decides when.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import torch

from swarmd.aio import wait_within
from swarmd.codec import Manifest, content_hash, hash_hex, parse_hash
from swarmd.daemon.exchange import Exchange
from swarmd.daemon.gossip import Gossip, Peers
from swarmd.daemon.state import DaemonState, Phase
from swarmd.daemon.store import Journal, ModelStore
from swarmd.errors import (
    ChainUnavailable,
    CheckpointError,
    ContractRevert,
    InvalidUpdate,
    LedgerError,
    MergeError,
    SwarmError,
    TrainingError,
    TransportError,
    UpdateRejected,
    WireError,
)
from swarmd.ledger import Ledger, RoundInfo, RoundStatus
from swarmd.merge import apply_diff, make_diff, rule_for
from swarmd.task import Task
from swarmd.transport import Refusal, Verdict

log = logging.getLogger("swarmd.rounds")
T = TypeVar("T")

# Reverts that mean another honest site got there first, or the round moved on meanwhile.
BENIGN_REVERTS = {
    "AlreadyCommitted",
    "WrongRound",
    "RoundNotOpen",
    "NotElected",
    "NotEnoughCommits",
    "CommitWindowOpen",
    "ElectionTooEarly",
    "LeaderTimeoutNotReached",
    "NotLeader",
}
# Errors a round can hit without the site being misconfigured: log, back off, re-read the chain.
ROUND_ERRORS = (LedgerError, TransportError, WireError, CheckpointError, MergeError, TrainingError)
SEND_TIMEOUT = 15.0  # seconds to wait for a leader's slot and verdict before re-checking the chain


# Refusals that say nothing about our update: the leader has not opened this term's exchange yet,
# is busy, still holds an earlier stream of ours, or the stream broke on the way. Try again while
# the term lasts; any other refusal (a hash mismatch, an invalid update) would only repeat.
TRANSIENT_REFUSALS = frozenset(
    {
        Refusal.NOT_READY,
        Refusal.BUSY,
        Refusal.STREAM_CAP,
        Refusal.STALLED,
        Refusal.CANCELLED,
        Refusal.UNROUTABLE,
        Refusal.INTERNAL_ERROR,
    }
)


class RssPeak:
    """Samples this process's RSS in a thread; `growth` is the peak over the value at entry.

    The leader's memory during an exchange is the figure `swarm bench round` holds against model size."""

    def __init__(self, interval: float = 0.01) -> None:
        import psutil

        self._proc = psutil.Process()
        self._interval = interval
        self._stop = threading.Event()
        self.base = self.peak = 0

    def __enter__(self) -> RssPeak:
        self.base = self.peak = self._proc.memory_info().rss
        self._thread = threading.Thread(target=self._sample, name="rss", daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self._interval):
            self.peak = max(self.peak, self._proc.memory_info().rss)

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)

    @property
    def growth(self) -> int:
        return self.peak - self.base


class StopRequested(Exception):
    """Raised at a safe point once a graceful stop was asked for."""


class RoundDriver:
    """Drives this site through rounds until the task's last round, then keeps serving the model."""

    def __init__(
        self,
        *,
        task: Task,
        ledger: Ledger,
        node: Any,
        trainer: Any,
        store: ModelStore,
        journal: Journal,
        state: DaemonState,
        metrics: Any,
        poll_interval: float,
        eval_list: Path | None = None,
    ) -> None:
        self.task = task
        self.ledger = ledger
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
        self.exchange: Exchange | None = None
        self.peers = Peers(self.me)
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
        )
        self._chain_pool = ThreadPoolExecutor(1, thread_name_prefix="chain")
        self._train_pool = ThreadPoolExecutor(1, thread_name_prefix="train")
        self.log_extra: dict[str, Any] = {}

    @property
    def node(self) -> Any:
        return self.gossip.node

    @node.setter
    def node(self, node: Any) -> None:
        # The node is built with this driver as its handler, so it arrives after the driver.
        self.gossip.node = node

    # --- plumbing ----------------------------------------------------------------------------
    async def chain(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a ledger call on the chain thread; retry with backoff while the RPC is unreachable."""
        delay = 0.5
        loop = asyncio.get_running_loop()
        while True:
            try:
                result = await loop.run_in_executor(self._chain_pool, fn, *args)
                if not self.state.chain_ok:
                    log.info("chain reachable again")
                self.state.chain_ok = True
                return result
            except ChainUnavailable as exc:
                self.state.chain_ok = False
                log.warning("chain unreachable (%s); retrying in %.1fs", exc, delay)
                await self.sleep(delay, wakeable=False)
                delay = min(delay * 2, 10.0)

    async def transact(self, fn: Callable[..., T], *args: Any) -> T | None:
        """A chain transaction whose benign revert (another site won the race) returns None."""
        try:
            return await self.chain(fn, *args)
        except ContractRevert as exc:
            if exc.error_name in BENIGN_REVERTS:
                log.info("%s: %s (another site got there first)", fn.__name__, exc.error_name)
                return None
            raise

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

    def nudge(self) -> None:
        self._nudged.set()

    def checkpoint(self) -> None:
        if self.stopping.is_set():
            raise StopRequested

    def set_phase(self, phase: Phase, r: int | None = None) -> None:
        if phase == self.state.phase and (r is None or r == self.state.round):
            return
        prev, prev_round = self.state.phase, self.state.round
        elapsed = time.time() - self.state.phase_since
        self.metrics.observe_phase(prev.value, elapsed)
        if prev_round >= 0 and prev not in (Phase.STARTING, Phase.DONE, Phase.STOPPING):
            # Per-round phase times are what `swarm bench round` breaks a round down by.
            phases = dict(self.journal.get(prev_round).phases)
            phases[prev.value] = round(phases.get(prev.value, 0.0) + elapsed, 4)
            self.journal.update(prev_round, phases=phases)
        self.state.enter(phase, r)
        self.metrics.set_round(self.state.round)
        log.info("round %s: %s", self.state.round, phase.value)

    async def refresh_members(self) -> None:
        members = await self.chain(self.ledger.active_members)
        self.peers.update(members)
        self.node.set_peers({m.curve_key: m.endpoint for m in members if m.account != self.me})

    # --- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        await self.refresh_members()
        await self.ensure_initial_model()
        while True:
            self.checkpoint()
            r = await self.chain(self.ledger.current_round)
            self.state.rounds_total = self.task.swarm.rounds
            if r >= self.task.swarm.rounds:
                await self.finish(r)
                continue
            try:
                await self.play_round(r)
            except ROUND_ERRORS as exc:
                log.error("round %d: %s: %s; re-reading the chain", r, type(exc).__name__, exc)
                await self.sleep(2.0)

    async def finish(self, r: int) -> None:
        info = await self.chain(self.ledger.round, r)
        if self.state.phase != Phase.DONE:
            await self.ensure_model(info.base_hash, r - 1)
            self.set_phase(Phase.DONE, r)
        await self.sleep(max(self.poll, 1.0))

    async def play_round(self, r: int) -> None:
        await self.refresh_members()
        info = await self.chain(self.ledger.round, r)
        self.set_phase(Phase.SYNC, r)
        base = await self.ensure_model(info.base_hash, r - 1)
        mine = next((c for c in info.commits if c.site == self.me), None)
        if mine is None:
            if info.status != RoundStatus.OPEN:
                await self.sit_out(r)
                return
            if not await self.train_and_commit(r, info, base):
                await self.sit_out(r)
                return
        info = await self.until_elected(r)
        while info.status == RoundStatus.ELECTED:
            self.state.leader, self.state.term = info.leader, info.term
            if info.leader == self.me:
                await self.lead(r, info, base)
            else:
                await self.deliver(r, info)
            info = await self.until_settled(r, info.term)
        await self.conclude(r, info)

    # --- train and commit ----------------------------------------------------------------------
    async def train_and_commit(self, r: int, info: RoundInfo, base: dict[str, torch.Tensor]) -> bool:
        rec = self.journal.get(r)
        update_hash = parse_hash(rec.update_hash) if rec.update_hash else b""
        if not update_hash or not self.store.has(update_hash):
            self.set_phase(Phase.TRAIN, r)
            result = await self.train(base, r)
            update = result.weights
            if self.task.swarm.send == "diff" and result.weight_type == "weights":
                update = make_diff(update, base)
            elif self.task.swarm.send == "weights" and result.weight_type == "diff":
                update = apply_diff(base, update)
            update_hash = self.store.put(update)
            self.journal.update(
                r,
                base_hash=hash_hex(info.base_hash),
                update_hash=hash_hex(update_hash),
                n_samples=result.n_samples,
                loss=result.loss,
                train_seconds=result.seconds,
            )
            self.state.n_samples, self.state.last_loss = result.n_samples, result.loss
            self.metrics.observe_training(result.n_samples, result.loss)
        self.checkpoint()
        current = await self.chain(self.ledger.round, r)
        if current.status != RoundStatus.OPEN:
            log.info("round %d closed while we trained; skipping it", r)
            return False
        self.set_phase(Phase.COMMIT, r)
        n = self.journal.get(r).n_samples
        await self.transact(self.ledger.commit, r, update_hash, n)
        after = await self.chain(self.ledger.round, r)
        if not any(c.site == self.me for c in after.commits):
            return False
        self.journal.update(r, committed=True)
        return True

    async def train(self, base: dict[str, torch.Tensor], r: int) -> Any:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._train_pool, self.trainer.train, base, r)
        stop = asyncio.ensure_future(self.stopping.wait())
        done, _ = await asyncio.wait({fut, stop}, return_when=asyncio.FIRST_COMPLETED)
        if fut not in done:
            self.trainer.abort()
            with contextlib.suppress(SwarmError):
                await fut
            raise StopRequested
        stop.cancel()
        return fut.result()

    # --- election ----------------------------------------------------------------------------
    async def until_elected(self, r: int) -> RoundInfo:
        self.set_phase(Phase.ELECT, r)
        while True:
            info = await self.chain(self.ledger.round, r)
            if info.status != RoundStatus.OPEN:
                if info.status == RoundStatus.ELECTED:
                    self.metrics.election()
                return info
            if await self.chain(self.ledger.can_elect, r):
                await self.transact(self.ledger.elect, r)
                continue
            await self.sleep(self.poll)

    async def until_settled(self, r: int, term: int) -> RoundInfo:
        """Wait for finalize; call reelect when the leader timed out. Returns on a new term or the end."""
        while True:
            info = await self.chain(self.ledger.round, r)
            if info.status != RoundStatus.ELECTED or info.term != term:
                return info
            if await self.chain(self.ledger.can_reelect, r):
                log.warning("round %d: leader %s timed out; calling reelect", r, info.leader)
                if await self.transact(self.ledger.reelect, r) is not None:
                    self.metrics.reelection()
                continue
            await self.sleep(self.poll)

    # --- exchange: committer side --------------------------------------------------------------
    async def deliver(self, r: int, info: RoundInfo) -> None:
        """Send our update to the term's leader until it is accepted or the term ends."""
        self.set_phase(Phase.EXCHANGE, r)
        rec = self.journal.get(r)
        if rec.delivered_term == info.term:
            return
        update = self.store.get(parse_hash(rec.update_hash))
        leader = info.leader or ""
        delay = 0.1
        while True:
            self.checkpoint()
            if leader not in self.peers.endpoints:
                await self.refresh_members()
            verdict = await self.send_while_term_lasts(r, info.term, leader, update)
            # "duplicate": the leader stored our update before it crashed and lost our connection
            # before its answer reached us; restarted, it folded the stored copy in again.
            if verdict is not None and (verdict.ok or verdict.reason == Refusal.DUPLICATE):
                self.journal.update(r, delivered_term=info.term)
                how = "accepted" if verdict.ok else "already holds"
                log.info("round %d: leader %s %s our update", r, leader, how)
                return
            if verdict is not None and verdict.reason not in TRANSIENT_REFUSALS:
                log.error(
                    "round %d: leader %s rejected our update: %s %s",
                    r,
                    leader,
                    verdict.reason,
                    verdict.detail,
                )
                return
            if verdict is not None and verdict.reason != Refusal.NOT_READY:
                log.info("round %d: leader %s refused for now (%s); retrying", r, leader, verdict.reason)
            now = await self.chain(self.ledger.round, r)
            if now.status != RoundStatus.ELECTED or now.term != info.term:
                return
            if await self.chain(self.ledger.can_reelect, r):
                return
            await self.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def send_while_term_lasts(
        self, r: int, term: int, leader: str, update: dict[str, torch.Tensor]
    ) -> Verdict | None:
        """One delivery attempt, abandoned as soon as the chain shows a new term or the round's end.

        A frozen or half-dead leader can hold a send for its whole timeout; the re-election that
        replaces it must not wait for that."""
        send = asyncio.ensure_future(
            self.node.send_update(
                self.peers.key(leader), round=r, term=term, state=update, timeout=SEND_TIMEOUT
            )
        )
        try:
            while not send.done():
                await asyncio.wait({send}, timeout=max(self.poll, 0.5))
                if send.done():
                    break
                now = await self.chain(self.ledger.round, r)
                if now.status != RoundStatus.ELECTED or now.term != term:
                    log.info("round %d: term %d ended while sending to %s", r, term, leader)
                    return None
            return send.result()
        except (TransportError, WireError, KeyError) as exc:
            log.warning("round %d: cannot deliver to leader %s: %s", r, leader, exc)
            return None
        finally:
            if not send.done():
                send.cancel()

    # --- exchange, merge, finalize: leader side --------------------------------------------------
    async def lead(self, r: int, info: RoundInfo, base: dict[str, torch.Tensor]) -> None:
        self.set_phase(Phase.EXCHANGE, r)
        self.journal.update(r, led=True)
        self.metrics.led()
        expected = {c.site: (c.update_hash, c.n_samples) for c in info.commits}
        exchange = Exchange(
            round=r,
            term=info.term,
            expected=expected,
            base=base,
            rule=rule_for(self.task.swarm),
            is_diff=self.task.swarm.send == "diff",
            norm_bound=self.task.swarm.norm_bound,
        )
        self.exchange = exchange
        try:
            own = self.store.get(parse_hash(self.journal.get(r).update_hash))
            model_bytes = sum(t.numel() * t.element_size() for t in own.values())
            with RssPeak() as rss:
                self.offer_stored(exchange, self.me, own)
                del own
                # Updates this leader accepted before a crash are on disk: fold them in again.
                for sender, h in self.journal.get(r).received.items():
                    self.offer_stored(exchange, sender, self.store.get(parse_hash(h), keep=False))
                await self.collect(exchange, info)
                self.set_phase(Phase.MERGE, r)
                merged, included = exchange.result()
            self.journal.update(r, leader_rss_growth=rss.growth, model_bytes=model_bytes)
        finally:
            self.exchange = None
        merged_hash = self.store.put(merged)
        self.gossip.servable.add(merged_hash)
        self.set_phase(Phase.FINALIZE, r)
        log.info(
            "round %d: finalizing %s with %d of %d updates (excluded: %s)",
            r,
            hash_hex(merged_hash)[:18],
            len(included),
            len(expected),
            exchange.excluded or "none",
        )
        await self.transact(self.ledger.finalize, r, merged_hash, included)

    def offer_stored(self, exchange: Exchange, sender: str, state: Mapping[str, torch.Tensor]) -> None:
        try:
            exchange.offer(sender, state, content_hash(state))
        except InvalidUpdate as exc:
            log.error("round %d: stored update of %s not merged: %s", exchange.round, sender, exc)

    async def collect(self, exchange: Exchange, info: RoundInfo) -> None:
        """Wait for every committer, or until two thirds of the leader timeout have passed."""
        # Leave a third of the timeout for the finalize transaction itself to be mined.
        deadline_block = (info.elected_block or 0) + max(1, self.task.swarm.leader_timeout * 2 // 3)
        while not exchange.complete.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_within(exchange.complete.wait(), self.poll)
            self.checkpoint()
            if await self.chain(self.ledger.block_number) >= deadline_block:
                log.warning(
                    "round %d: exchange deadline; missing %s", exchange.round, sorted(exchange.pending)
                )
                return

    # --- transport handler (called by the node) ---------------------------------------------------
    def check_offer(self, peer: bytes, header: Any) -> Verdict:
        """Refuse an update for a round or term we are not collecting, before its bytes move."""
        ex = self.exchange
        if ex is None or ex.round != header.round or ex.term != header.term:
            self.nudge()  # a committer saw us elected: look at the chain now, not at the next poll
            return Verdict(False, Refusal.NOT_READY, "no exchange open for that round and term")
        sender = self.peers.members.get(peer)
        if sender in ex.received:
            return Verdict(False, Refusal.DUPLICATE, f"already holds the update of {sender} for this term")
        return Verdict(True)

    async def on_update(
        self, peer: bytes, header: Any, state: Mapping[str, torch.Tensor], digest: bytes
    ) -> Any:
        sender = self.peers.members.get(peer)
        if sender is None:
            await self.refresh_members()
            sender = self.peers.members.get(peer)
            if sender is None:
                return Verdict(False, Refusal.NOT_MEMBER)
        self.state.peers_seen[sender] = time.time()
        ex = self.exchange
        if ex is None or ex.round != header.round or ex.term != header.term:
            return Verdict(False, Refusal.NOT_READY, "no exchange open for that round and term")
        try:
            ex.offer(sender, state, digest)
        except UpdateRejected as exc:
            reason = exc.reason if isinstance(exc, InvalidUpdate) else "rejected"
            self.metrics.rejection(reason)
            log.warning("round %d: rejected update from %s: %s", ex.round, sender, exc)
            return Verdict(False, Refusal.INVALID, f"{reason}: {exc}")
        # Persist before acknowledging: the sender will not resend to this term's leader.
        put = functools.partial(self.store.put, state, digest, keep=False)
        await asyncio.get_running_loop().run_in_executor(None, put)
        received = {**self.journal.get(ex.round).received, sender: hash_hex(digest)}
        self.journal.update(ex.round, received=received)
        return Verdict(True)

    async def on_announce(self, peer: bytes, header: Any) -> None:
        sender = self.peers.members.get(peer)
        if sender is None:
            return
        self.state.peers_seen[sender] = time.time()
        self.nudge()  # a round was finalized
        self.gossip.on_announce(peer, header.round, header.model_hash)

    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        return self.gossip.serve_model(model_hash)

    # --- dissemination ----------------------------------------------------------------------------
    async def conclude(self, r: int, info: RoundInfo) -> None:
        if info.status == RoundStatus.ABANDONED:
            log.warning("round %d was abandoned: no committer left; next round starts from the same model", r)
            return
        self.set_phase(Phase.DISSEMINATE, r)
        merged_hash = info.merged_hash or b""
        model = await self.ensure_model(merged_hash, r)
        if info.leader == self.me:
            # The gossip starts here; every site that fetches the model passes it on.
            await self.gossip.spread(r, merged_hash, exclude=set())
        self.metrics.round_done(r)
        self.prune_updates(before=r)
        await self.evaluate(r, model)

    def prune_updates(self, before: int) -> None:
        """Delete updates (ours and, as leader, received ones) of settled rounds; models stay for audit."""
        keep = self.gossip.servable | {
            parse_hash(rec.merged_hash) for rec in self.journal.rounds.values() if rec.merged_hash
        }
        for r, rec in self.journal.rounds.items():
            if r >= before:
                continue
            for h in [rec.update_hash, *rec.received.values()]:
                if h and parse_hash(h) not in keep:
                    self.store.path(parse_hash(h)).unlink(missing_ok=True)

    async def ensure_initial_model(self) -> None:
        from swarmd.train import initial_weights

        binding = await self.chain(self.ledger.binding)
        if self.store.has(binding.initial_model_hash):
            self.gossip.servable.add(binding.initial_model_hash)
            return
        loop = asyncio.get_running_loop()
        weights = await loop.run_in_executor(self._train_pool, initial_weights, self.task)
        h = self.store.put(weights)
        if h != binding.initial_model_hash:
            from swarmd.errors import TaskError

            raise TaskError(
                f"this site's initial model hashes to {hash_hex(h)}, the ledger says "
                f"{hash_hex(binding.initial_model_hash)}",
                hint="sites must run the same task, bundle and library versions",
            )
        self.gossip.servable.add(h)

    async def ensure_model(self, h: bytes, r: int) -> dict[str, torch.Tensor]:
        """The model with content hash `h` (verified on chain by the caller), from disk or from peers."""
        if not self.store.has(h):
            await self.gossip.wait_for(h, r)
        self.gossip.servable.add(h)
        if r >= 0:
            rec = self.journal.get(r)
            if not rec.merged_hash:
                self.journal.update(r, merged_hash=hash_hex(h))
            self.state.last_merged_round = max(self.state.last_merged_round, r)
            self.state.last_merged_hash = hash_hex(h)
        return self.store.get(h)

    async def sit_out(self, r: int) -> None:
        """We missed round r's commits: wait for its model and resume from the next round."""
        self.set_phase(Phase.SKIPPED, r)
        while True:
            info = await self.chain(self.ledger.round, r)
            if info.status in (RoundStatus.FINALIZED, RoundStatus.ABANDONED):
                await self.conclude(r, info)
                return
            await self.sleep(self.poll)

    # --- evaluation --------------------------------------------------------------------------------
    async def evaluate(self, r: int, model: dict[str, torch.Tensor]) -> None:
        every = self.task.swarm.eval_every
        last = r == self.task.swarm.rounds - 1
        if every == 0 or (r % every and not last) or self.journal.get(r).metrics:
            return
        loop = asyncio.get_running_loop()
        try:
            metrics = await loop.run_in_executor(
                self._train_pool, self.trainer.evaluate, model, self.eval_list
            )
        except SwarmError as exc:
            log.error("round %d: evaluation failed: %s", r, exc)
            return
        self.journal.update(r, metrics=metrics)
        self.state.metrics = metrics
        self.metrics.model_metrics(metrics)
        log.info("round %d: merged model scores %s", r, metrics)

    async def evaluate_baseline(self, initial: dict[str, torch.Tensor]) -> None:
        if self.journal.baseline or self.task.swarm.eval_every == 0:
            self.state.baseline = dict(self.journal.baseline)
            return
        loop = asyncio.get_running_loop()
        metrics = await loop.run_in_executor(self._train_pool, self.trainer.evaluate, initial, self.eval_list)
        self.journal.set_baseline(metrics)
        self.state.baseline = metrics

    def close(self) -> None:
        self._chain_pool.shutdown(wait=False, cancel_futures=True)
        self._train_pool.shutdown(wait=False, cancel_futures=True)
