"""The leader's side of a round (open the exchange, collect, merge, finalize) and this site's answers
to its peers: the `transport.Handler` methods the node calls (through a `HandlerSlot`, which lets
the node be built before the driver that uses it).

A committer's update is admitted only for the round and term this site is collecting, checked
against the hash the sender committed on chain, stored before it is acknowledged, and folded into
the merge as it arrives. `RoundDriver` (rounds.py) decides when to lead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Mapping

import torch

from swarmd.aio import wait_within
from swarmd.codec import Manifest, content_hash
from swarmd.daemon.exchange import Exchange
from swarmd.daemon.plumbing import RoundPlumbing
from swarmd.daemon.rss import RssPeak
from swarmd.daemon.state import Phase
from swarmd.errors import DaemonError, InvalidUpdate, UpdateRejected
from swarmd.ledger import RoundInfo
from swarmd.merge import rule_for
from swarmd.task import WeightKind
from swarmd.transport import AnnounceHeader, Handler, PeerId, Refusal, UpdateHeader, Verdict

log = logging.getLogger("swarmd.rounds")


class LeaderSide(RoundPlumbing):
    """Leading a term, and the transport handler (check_offer, on_update, on_announce, serve_model)."""

    # --- exchange, merge, finalize ----------------------------------------------------------------
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
            is_diff=self.task.swarm.send == WeightKind.DIFF,
            norm_bound=self.task.swarm.norm_bound,
        )
        self.exchange = exchange
        try:
            rec = self.journal.get(r)
            own = self.store.get(self.own_update(r))
            model_bytes = sum(t.numel() * t.element_size() for t in own.values())
            with RssPeak() as rss:
                self.offer_stored(exchange, self.me, own)
                del own
                # Updates this leader accepted before a crash are on disk: fold them in again.
                for sender, h in rec.received.items():
                    self.offer_stored(exchange, sender, self.store.get(h, keep=False))
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
            merged_hash.short(),
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
    def check_offer(self, peer: PeerId, header: UpdateHeader) -> Verdict:
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
        self, peer: PeerId, header: UpdateHeader, state: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict:
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
        stored = await asyncio.get_running_loop().run_in_executor(None, put)
        received = {**self.journal.get(ex.round).received, sender: stored}
        self.journal.update(ex.round, received=received)
        return Verdict(True)

    async def on_announce(self, peer: PeerId, header: AnnounceHeader) -> None:
        sender = self.peers.members.get(peer)
        if sender is None:
            return
        self.state.peers_seen[sender] = time.time()
        self.nudge()  # a round was finalized
        self.gossip.on_announce(peer, header.round, header.model_hash)

    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        return self.gossip.serve_model(model_hash)


class HandlerSlot:
    """The node's handler, forwarding to the round driver.

    The driver needs the node when it is built, and the node needs a handler when it is built; the
    daemon gives the slot to the node first and binds the driver into it before the node starts."""

    def __init__(self) -> None:
        self._target: Handler | None = None

    def bind(self, target: Handler) -> None:
        self._target = target

    @property
    def target(self) -> Handler:
        if self._target is None:
            raise DaemonError("the transport called its handler before the daemon bound one")
        return self._target

    def check_offer(self, peer: PeerId, header: UpdateHeader) -> Verdict:
        return self.target.check_offer(peer, header)

    async def on_update(
        self, peer: PeerId, header: UpdateHeader, state: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict:
        return await self.target.on_update(peer, header, state, digest)

    async def on_announce(self, peer: PeerId, header: AnnounceHeader) -> None:
        await self.target.on_announce(peer, header)

    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        return self.target.serve_model(model_hash)
