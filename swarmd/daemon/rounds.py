"""The round state machine: train, commit, reveal, elect, exchange, merge, finalize, disseminate.

This is the only module that knows the order of a round (`RoundDriver.play_round`). The chain is
the source of truth: each step re-reads the round from the ledger, and the journal only records
what this site did (so a restart resumes mid-round without redoing a commit or losing an update).
The leader's side of the exchange and the answers to peers are in leader.py, the chain thread and
sleeps in plumbing.py; spreading the merged model is `gossip.Gossip`'s job, this module decides when.
A cyclic round (`[round] mode = "cyclic"`: the model visits the sites in turn) is cyclic.py's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import cast

import torch

from swarmd.codec import Digest, hash_hex
from swarmd.daemon.accounting import kept_secret, round_secret
from swarmd.daemon.dp import BudgetSide
from swarmd.daemon.faults import Fault
from swarmd.daemon.models import ModelSide
from swarmd.daemon.personal import PersonalSide
from swarmd.daemon.plumbing import StopRequested
from swarmd.daemon.secure import KEEP_ROUNDS
from swarmd.daemon.shards import ShardSide
from swarmd.daemon.state import Phase
from swarmd.errors import (
    LedgerError,
    MergeError,
    StoreError,
    SwarmError,
    TrainingError,
    TransportError,
    WireError,
)
from swarmd.ledger import ElectionView, RoundInfo, RoundStatus
from swarmd.ledger import errors as reverts
from swarmd.ledger.receipt import election_seal
from swarmd.merge import apply_diff, make_diff
from swarmd.task import WeightKind
from swarmd.train.residual import UpdateCompressor
from swarmd.train.trainer import TrainResult
from swarmd.transport import Refusal, Verdict

log = logging.getLogger("swarmd.rounds")

# Errors a round can hit without the site being misconfigured: log, back off, re-read the chain.
# StoreError: a checkpoint failed its hash (quarantined, fetched again) or the disk is full (a
# reported problem; nothing was changed, and the round resumes when space returns).
ROUND_ERRORS = (LedgerError, TransportError, WireError, StoreError, MergeError, TrainingError)
STALE_KEY_RETRIES = 5  # masks redone because keys were advertised meanwhile, before sitting out
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


class RoundDriver(ShardSide, BudgetSide, ModelSide, PersonalSide):
    """Drives this site through rounds until the task's last round, then keeps serving the model."""

    compressor: UpdateCompressor | None = None  # `[exchange] compression`, set by the app

    # --- the loop ----------------------------------------------------------------------------
    async def run(self) -> None:
        await self.refresh_members()
        self.serve_committed()  # at once: a site restarted after the last round never plays one again
        await self.rebuild_budget()
        follower = asyncio.ensure_future(self.follow_members())
        heads = asyncio.ensure_future(self.heads.run()) if self.heads is not None else None
        try:
            await self.rounds()
        finally:
            for task in (follower, heads):
                if task is not None:
                    task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await task

    async def rounds(self) -> None:
        await self.ensure_initial_model()
        while True:
            self.checkpoint()
            r, info = await self.round_to_play()
            self.state.rounds_total = self.task.swarm.rounds
            try:
                if r >= self.task.swarm.rounds:
                    await self.finish(r)  # reads and journals the final model: may hit a full disk
                else:
                    await self.play_round(r, info)
            except ROUND_ERRORS as exc:
                log.error("round %d: %s: %s; re-reading the chain", r, type(exc).__name__, exc)
                await self.sleep(2.0)

    async def round_to_play(self) -> tuple[int, RoundInfo | None]:
        """Once this site is an active member, the current round and, when it is the round after the one
        played last (the finalize just opened it), its info: the member list, the round's number and its
        info in one read, the three reads every site makes between a finalize and its next training.
        Otherwise (a restart, a round that went wrong, a site not active) one read at a time."""
        last = self.state.round
        guess = last if self.state.phase == Phase.DONE else last + 1
        started = self.member_read()
        try:
            start = await self.chain(self.ledger.round_start, max(guess, 0))
        except reverts.UnknownRound:
            start = None  # the round we played is still open (it went wrong here): read it as it is
        if start is not None:
            await self.apply_members(start.members, started)
            if self.membership.active:
                return start.current, start.info
        await self.until_active()
        return await self.chain(self.ledger.current_round), None

    async def finish(self, r: int) -> None:
        info = await self.chain(self.ledger.round, r)
        if self.state.phase != Phase.DONE:
            model = await self.ensure_model(info.base_hash, r - 1)
            await self.personalise(r - 1, info.base_hash, model)  # `swarm.personalise_steps`; off the chain
            await self.gossip.durable(info.base_hash)  # "done" means the final model's file is there to copy
            self.set_phase(Phase.DONE, r)
        await self.sleep(max(self.poll, 1.0))

    async def play_round(self, r: int, info: RoundInfo | None = None) -> None:
        """Play round r (`info`: the round as `round_to_play` just read it, if it did)."""
        if self.task.round.mode == "cyclic":
            await self.play_cyclic(r)  # the model visits the sites in turn (cyclic.py)
            return
        # `rounds` has just re-read the members (round_to_play), and follow_members keeps doing so.
        self.serve_committed()  # after a restart too
        if info is None:
            info = await self.chain(self.ledger.round, r)
        self.set_phase(Phase.SYNC, r)
        base = await self.ensure_model(info.base_hash, r - 1)
        mine = next((c for c in info.commits if c.site == self.me), None)
        if mine is not None:
            self.count_epsilon(r)  # a restart between our commit and its counting
        else:
            if info.status != RoundStatus.OPEN or self.budget_spent():
                await self.sit_out(r)
                return
            if not await self.train_and_commit(r, info, base):
                await self.sit_out(r)
                return
        try:
            info = await self.until_elected(r)
            while info.status == RoundStatus.ELECTED:
                self.state.leader, self.state.term = info.leader, info.term
                if self.sharded and info.has_revealed(self.me):
                    await self.shard_round(r, info, base)
                elif info.leader == self.me and Fault.DECLINE_LEAD in self.faults:
                    log.warning("FAULT decline-lead: not leading round %d term %d", r, info.term)
                elif info.leader == self.me:
                    await self.lead(r, info, base)
                elif info.has_revealed(self.me):  # a committer that did not reveal is out of the round
                    await self.deliver(r, info)
                else:
                    log.warning("round %d: we did not reveal our election secret in time; sitting it out", r)
                info = await self.until_settled(r, info.term)
        finally:
            self.close_early_shards()  # a sharded start before an election that never came
        await self.conclude(r, info)

    # --- train and commit ----------------------------------------------------------------------
    async def train_and_commit(self, r: int, info: RoundInfo, base: dict[str, torch.Tensor]) -> bool:
        if self.secure:
            if not await self.advertise(r):
                return False
            self.start_sharing(r, info.base_hash)
        try:
            return await self.commit_trained(r, info, base)
        finally:
            self.stop_sharing(r)

    async def commit_trained(self, r: int, info: RoundInfo, base: dict[str, torch.Tensor]) -> bool:
        plain = await self.trained_update(r, info, base)
        self.checkpoint()
        for _ in range(STALE_KEY_RETRIES):
            current = await self.chain(self.ledger.round, r)
            if current.status != RoundStatus.OPEN:
                log.info("round %d closed while we trained; skipping it", r)
                return False
            update_hash, key_count = await self.committable(r, info, plain)
            self.set_phase(Phase.COMMIT, r)
            n = self.journal.get(r).n_samples
            eps = self.budget.committed_epsilon() if self.budget else 0
            seal = election_seal(round_secret(self.journal, r), self.me, r)  # journaled before it is sent
            await self.gossip.durable(info.base_hash)  # trained from memory: on disk before we commit to it
            committed = await self.commitment(update_hash)  # a Merkle root under the sharded topology
            try:
                receipt = await self.transact(
                    self.ledger.commit, r, committed, n, seal=seal, milli_epsilon=eps, key_count=key_count
                )
            except reverts.StaleKeys as exc:
                # A site advertised keys after we masked: mask again under the new key set, once it is
                # mined (the revert counts a pending advertise that the logs we read cannot show yet).
                log.info("round %d: %s; masking again", r, exc)
                self.journal.update(r, update_hash=None)
                await self.next_block()
                continue
            # A mined commit needs no read to show it is in (the last committer's commit is what every
            # site waits for); a benign revert (committed before a restart, or too late) does.
            if receipt is None:
                after = await self.chain(self.ledger.round, r)
                if not any(c.site == self.me for c in after.commits):
                    return False
            self.journal.update(r, committed=True)
            self.count_epsilon(r)
            return True
        log.warning("round %d: the key set kept moving; sitting this round out", r)
        return False

    async def trained_update(self, r: int, info: RoundInfo, base: dict[str, torch.Tensor]) -> Digest:
        """Train round r (unless a stored result survived a restart): the plain update's hash."""
        rec = self.journal.get(r)
        if rec.plain_hash is not None and self.store.has(rec.plain_hash):
            return rec.plain_hash
        if not self.secure and rec.update_hash is not None and self.store.has(rec.update_hash):
            return rec.update_hash  # a journal resynced from the chain, or written before plain_hash
        self.set_phase(Phase.TRAIN, r)
        result = await self.train(base, r)
        update = result.weights
        send = self.task.swarm.send
        if send == WeightKind.DIFF and result.weight_type == WeightKind.WEIGHTS:
            update = make_diff(update, base)
        elif send == WeightKind.WEIGHTS and result.weight_type == WeightKind.DIFF:
            update = apply_diff(base, update)
        if self.budget is not None:
            update = self.budget.privatize(update, base)
        if self.compressor is not None:  # after the noise: compression is post-processing, DP holds
            update = await asyncio.to_thread(self.compressor.compress, r, update)
        plain_hash = await self.store_update(update)
        self.journal.update(
            r,
            base_hash=Digest(info.base_hash),
            plain_hash=plain_hash,
            update_hash=None if self.secure else plain_hash,
            n_samples=result.n_samples,
            loss=result.loss,
            train_seconds=result.seconds,
        )
        self.state.n_samples, self.state.last_loss = result.n_samples, result.loss
        self.metrics.observe_training(result.n_samples, result.loss)
        return plain_hash

    async def committable(self, r: int, info: RoundInfo, plain: Digest) -> tuple[Digest, int]:
        """What we commit: the plain update, or under secure aggregation its masked form (made once
        per key set: a restart after masking commits the stored masked update and its key count)."""
        rec = self.journal.get(r)
        if not self.secure:
            return plain, 0
        if rec.update_hash is not None and self.store.has(rec.update_hash):
            return rec.update_hash, rec.key_count
        masked, key_count = await self.mask(r, info.base_hash, self.store.get(plain), rec.n_samples)
        update_hash = self.store.put(masked)
        self.journal.update(r, update_hash=update_hash, key_count=key_count)
        return update_hash, key_count

    async def train(self, base: dict[str, torch.Tensor], r: int) -> TrainResult:
        loop = asyncio.get_running_loop()
        fut = loop.run_in_executor(self._train_pool, self.trainer.train, base, r)
        stop = asyncio.ensure_future(self.stopping.wait())
        either = cast("set[asyncio.Future[object]]", {fut, stop})
        done, _ = await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
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
            # The round and what the next block allows, in one read: after the last commit every site
            # reads this once, and the sharded exchange opens on it.
            view = await self.chain(self.ledger.election_view, r)
            info = view.info
            if info.status != RoundStatus.OPEN:
                if info.status == RoundStatus.ELECTED:
                    self.metrics.election()
                return info
            if await self.reveal_if_due(r, view):
                continue
            if view.can_elect:
                await self.transact(self.ledger.elect, r)
                continue
            await self.sleep(self.poll)

    async def reveal_if_due(self, r: int, view: ElectionView) -> bool:
        """Reveal our election secret as soon as the contract allows; True when a reveal was sent."""
        info = view.info
        if info.commit_of(self.me) is None or info.has_revealed(self.me):
            return False
        secret = kept_secret(self.journal, r)
        if secret is None or not view.can_reveal:
            return False  # a lost journal lost the secret: the round goes on without us (NOT_REVEALED)
        if self.sharded:
            # Commits have closed: the exchange can start, before our reveal's transaction (a tenth of a
            # second on the exchange's path at every site; the election waits for the reveals, the
            # exchange does not). On the commits of the block `can_reveal` was read for, the next one:
            # the latest may lack the last commit, mined with it, and a site that opened on fewer would
            # refuse that committer as a stranger, then start its fetches over once elected.
            await self.open_shards_early(r, await self.chain(self.ledger.round, r, "pending"))
        await self.transact(self.ledger.reveal, r, secret)
        return True

    async def until_settled(self, r: int, term: int) -> RoundInfo:
        """Wait for finalize; call reelect when the leader timed out. Returns on a new term or the end."""
        while True:
            info = await self.chain(self.ledger.round, r)
            if info.status != RoundStatus.ELECTED or info.term != term:
                return info
            if await self.reelect_if_due(r, info.leader):
                continue
            await self.until_next_head()

    async def reelect_if_due(self, r: int, leader: str | None) -> bool:
        """Call reelect as soon as the contract allows it; True when it did (or another site did)."""
        if not await self.chain(self.ledger.can_reelect, r):
            return False
        log.warning("round %d: leader %s timed out; calling reelect", r, self.names.label(leader))
        if await self.transact(self.ledger.reelect, r) is not None:
            self.metrics.reelection()
        return True

    # --- exchange: committer side --------------------------------------------------------------
    async def deliver(self, r: int, info: RoundInfo) -> None:
        """Send our update to the term's leader until it is accepted or the term ends."""
        self.set_phase(Phase.EXCHANGE, r)
        rec = self.journal.get(r)
        if rec.delivered_term == info.term:
            return
        digest = self.own_update(r)
        update = self.store.get(digest)
        leader = info.leader or ""
        delay = 0.05  # a leader that saw the election with us opens its exchange a few ms later
        while True:
            self.checkpoint()
            if leader not in self.peers.endpoints:
                await self.refresh_members()
            verdict = await self.send_while_term_lasts(r, info.term, leader, update, digest)
            # "duplicate": the leader stored our update before it crashed and lost our connection
            # before its answer reached us; restarted, it folded the stored copy in again.
            if verdict is not None and (verdict.ok or verdict.reason == Refusal.DUPLICATE):
                self.journal.update(r, delivered_term=info.term)
                how = "accepted" if verdict.ok else "already holds"
                log.info("round %d: leader %s %s our update", r, self.names.label(leader), how)
                if verdict.ok:
                    await self.keep_receipt(r, info, verdict.receipt)
                return
            if verdict is not None and verdict.reason not in TRANSIENT_REFUSALS:
                log.error(
                    "round %d: leader %s rejected our update: %s %s",
                    r,
                    self.names.label(leader),
                    verdict.reason,
                    verdict.detail,
                )
                return
            if verdict is not None and verdict.reason != Refusal.NOT_READY:
                who = self.names.label(leader)
                log.info("round %d: leader %s refused for now (%s); retrying", r, who, verdict.reason)
            now = await self.chain(self.ledger.round, r)
            if now.status != RoundStatus.ELECTED or now.term != info.term:
                return
            if await self.reelect_if_due(r, leader):
                return
            await self.sleep(delay)
            delay = min(delay * 2, 2.0)

    async def send_while_term_lasts(
        self, r: int, term: int, leader: str, update: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict | None:
        """One delivery attempt, abandoned as soon as the chain shows a new term or the round's end,
        or the leader's time is up: then this site calls reelect itself.

        A frozen or half-dead leader can hold a send for its whole timeout; the re-election that
        replaces it must not wait for that, nor for some other site to call it."""
        send = asyncio.ensure_future(
            self.node.send_update(
                self.peers.key(leader), round=r, term=term, state=update, digest=digest, timeout=SEND_TIMEOUT
            )
        )
        try:
            while not send.done():
                await asyncio.wait({send}, timeout=max(self.poll, 0.5))
                if send.done():
                    break
                self.checkpoint()  # a stop does not wait out the send's timeout
                now = await self.chain(self.ledger.round, r)
                if now.status != RoundStatus.ELECTED or now.term != term:
                    log.info("round %d: term %d ended while sending to %s", r, term, self.names.label(leader))
                    return None
                if await self.reelect_if_due(r, leader):
                    return None
            return send.result()
        except (TransportError, WireError, KeyError) as exc:
            log.warning("round %d: cannot deliver to leader %s: %s", r, self.names.label(leader), exc)
            return None
        finally:
            if not send.done():
                send.cancel()

    # --- dissemination ----------------------------------------------------------------------------
    async def conclude(self, r: int, info: RoundInfo) -> None:
        if info.status == RoundStatus.ABANDONED:
            log.warning("round %d was abandoned: no committer left; next round starts from the same model", r)
            return
        self.set_phase(Phase.DISSEMINATE, r)
        merged_hash = info.merged_hash or b""
        model = await self.ensure_model(merged_hash, r)
        if info.leader == self.me and not self.sharded:  # sharded: the committers gathered it already
            # The gossip starts here; every site that fetches the model passes it on.
            await self.gossip.spread(r, merged_hash, leader=self.me)
        self.metrics.round_done(r)
        self.prune_updates(before=r)
        self.serve_committed()
        self.forget_secrets(before=r - KEEP_ROUNDS)
        await self.evaluate(r, model)

    def prune_updates(self, before: int) -> None:
        """Delete what settled rounds no longer need: our plain update of a secure-aggregation round
        (it never leaves this site). Committed updates (ours and, as leader, the ones received) stay
        as long as the merged models do: a member's audit recomputes a round from them."""
        keep = self.gossip.servable | {
            rec.merged_hash for rec in self.journal.rounds.values() if rec.merged_hash
        }
        for r, rec in self.journal.rounds.items():
            if r >= before:
                continue
            keep_too = {rec.update_hash, *rec.received.values()}
            h = rec.plain_hash
            if h is not None and h not in keep and h not in keep_too:
                self.store.path(h).unlink(missing_ok=True)

    def serve_committed(self) -> None:
        """Let members fetch the plain committed updates we hold (ours, and those we received as leader)
        by hash, for `swarm ledger audit`. Masked updates are served only by the leader that unmasked them
        (with its transcript, they are what the audit recomputes the sum from)."""
        for rec in self.journal.records():
            if rec.key_count and self.secure and self.holds_transcript(rec.round):
                self.gossip.servable.update(rec.received.values())
                if rec.update_hash is not None:  # ours is in the sum too, and as leader we alone hold it
                    self.gossip.servable.add(rec.update_hash)
            if rec.key_count or (rec.plain_hash is not None and rec.plain_hash != rec.update_hash):
                continue
            if rec.committed and rec.update_hash is not None:
                self.gossip.servable.add(rec.update_hash)
            self.gossip.servable.update(rec.received.values())

    async def resync_journal(self) -> None:
        """After the journal was lost: record from the chain what this site did in the current round,
        so that an update it committed (and still holds) is delivered rather than stranded."""
        r = await self.chain(self.ledger.current_round)
        info = await self.chain(self.ledger.round, r)
        mine = next((c for c in info.commits if c.site == self.me), None)
        if mine is None or not self.store.has(mine.update_hash) or self.journal.get(r).committed:
            return
        self.journal.update(
            r,
            base_hash=Digest(info.base_hash),
            update_hash=Digest(mine.update_hash),
            n_samples=mine.n_samples,
            committed=True,
        )
        log.info("round %d: resynced our commit %s from the chain", r, hash_hex(mine.update_hash))

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
