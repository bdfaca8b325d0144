"""The leader's side of a round (open the exchange, collect, merge, finalize) and this site's answers
to its peers: the `transport.Handler` methods the node calls (through a `HandlerSlot`, which lets
the node be built before the driver that uses it).

A committer's update is admitted only for the round and term this site is collecting, and only
from a committer of that round offering the hash it committed on chain: anyone else is refused
before a byte moves or a receive slot is taken. An admitted stream that stalls is dropped after a
stall timeout derived from the exchange deadline (`stall_timeout`), so a committer that offers and
then sends nothing cannot keep the honest updates out. Updates are stored before they are
acknowledged and folded into the merge as they arrive. `RoundDriver` (rounds.py) decides when to lead.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import time
from collections.abc import Mapping

import torch

from swarmd.aio import wait_within
from swarmd.codec import Digest, Manifest
from swarmd.compress import Encoding
from swarmd.daemon.accounting import NOT_DELIVERED, exclusion_reasons, finalize_outcomes
from swarmd.daemon.cyclic import HANDOFF_TERM, CyclicSide
from swarmd.daemon.exchange import Exchange
from swarmd.daemon.faults import Fault
from swarmd.daemon.receipts import ReceiptSide
from swarmd.daemon.rss import RssPeak
from swarmd.daemon.secure import MaskedSum, SecureSide
from swarmd.daemon.state import Phase
from swarmd.errors import DaemonError, InvalidUpdate, StoreError, UpdateRejected
from swarmd.ledger import RoundInfo
from swarmd.ledger.receipt import Receipt
from swarmd.merge import rule_for
from swarmd.privacy import BelowThreshold
from swarmd.task import WeightKind
from swarmd.transport import (
    AnnounceHeader,
    Handler,
    Limits,
    PeerId,
    Refusal,
    SecAggHeader,
    UpdateHeader,
    Verdict,
)

log = logging.getLogger("swarmd.rounds")

# The slowest link an honest committer may be on (one stream, a thin WAN uplink): the stall timeout
# lets a chunk through at this rate, and the deadline leaves every committer's update time at it.
CONSERVATIVE_RATE = 8 << 20  # bytes per second
MIN_STALL = 2.0  # seconds: a loaded sender's event loop may pause this long between two chunks


def stall_timeout(
    seconds_left: float, update_bytes: int, senders: int, limits: Limits, ceiling: float
) -> float:
    """How long an admitted inbound stream may go without a chunk during an exchange.

    The receive slot serves one stream at a time, and a committer may hold `streams_per_peer` offers
    that each stall until dropped: the time left before the deadline, less the honest transfers,
    must cover those stalls twice over. Never below one chunk's time at CONSERVATIVE_RATE (twice,
    for a slow start) or MIN_STALL; never above the node's own setting (`ceiling`)."""
    transfers = senders * update_bytes / CONSERVATIVE_RATE
    chunk = min(limits.chunk_size, update_bytes) / CONSERVATIVE_RATE
    share = (seconds_left - transfers) / (2 * limits.streams_per_peer + 2)
    return min(ceiling, max(MIN_STALL, 2 * chunk, share))


def forged(merged: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Fault FORGE_MERGE: the merged model with its first floating value nudged, so it is no longer the
    merge of the included updates (what `swarm ledger audit` must catch)."""
    out = {k: v.clone() for k, v in merged.items()}
    name = next(k for k, v in out.items() if v.is_floating_point())
    out[name].view(-1)[0] += 1e-3
    log.warning("FAULT forge-merge: finalizing a model that is not the merge")
    return out


class LeaderSide(SecureSide, ReceiptSide, CyclicSide):
    """Leading a term, and the transport handler (check_offer, on_update, on_announce, on_secagg,
    serve_model)."""

    faults: frozenset[Fault] = frozenset()  # test-only misbehaviour (`swarmd.daemon.faults`)
    _decoding: asyncio.Lock | None = None  # one compressed update's check at a time (see on_update)

    # --- exchange, merge, finalize ----------------------------------------------------------------
    async def lead(self, r: int, info: RoundInfo, base: dict[str, torch.Tensor]) -> None:
        self.set_phase(Phase.EXCHANGE, r)
        self.journal.update(r, led=True)
        self.metrics.led()
        # A committer that did not reveal is out of the round (the contract's NOT_REVEALED): never merged.
        expected = {c.site: (c.update_hash, c.n_samples) for c in info.commits if info.has_revealed(c.site)}
        masked = await self.masked_sum(r, info, base) if self.secure else None
        exchange = Exchange(
            round=r,
            term=info.term,
            expected=expected,
            base=base,
            rule=masked or rule_for(self.task.swarm),
            is_diff=self.task.swarm.send == WeightKind.DIFF,
            norm_bound=0.0 if masked else self.task.swarm.norm_bound,  # under masks, each site bounds its own
            masked=masked is not None,
            label=self.names.label,
            encoding=Encoding.of(self.task.exchange),
        )
        outside = self.node.limits
        ceiling = outside.stall_timeout
        try:
            rec = self.journal.get(r)
            own = self.store.get(self.own_update(r))
            update_bytes = sum(t.numel() * t.element_size() for t in own.values())  # compressed, if so
            model_bytes = sum(t.numel() * t.element_size() for t in base.values())
            # A stream takes the node's limits when it starts: shorten the stall timeout before
            # the exchange takes its first offer.
            await self.limit_stalls(info, update_bytes, ceiling)
            self.exchange = exchange
            with RssPeak() as rss:
                self.offer_stored(exchange, self.me, own, self.own_update(r))
                del own
                # Updates this leader accepted before a crash are on disk: fold them in again.
                for sender, h in rec.received.items():
                    self.offer_stored(exchange, sender, self.store.get(h, keep=False), h)
                await self.collect(exchange, info)
                done = await self.merge(r, info.term, exchange, masked)
                if done is None:
                    return  # no finalize: the term times out and the round goes on without this sum
                merged, included = done
            self.journal.update(
                r,
                leader_rss_growth=rss.growth,
                model_bytes=model_bytes,
                rule_verdicts=exchange.verdicts_json(),
            )
        finally:
            self.exchange = None
            # Our own sends, serves and fetches outside an exchange keep the node's patience and room.
            self.node.set_limits(
                dataclasses.replace(
                    self.node.limits,
                    stall_timeout=ceiling,
                    max_inflight_bytes=outside.max_inflight_bytes,
                )
            )
        merged_hash = self.store.put(merged)
        self.gossip.servable.add(merged_hash)
        if masked is not None:  # what the unmasking used: kept before the finalize
            self.keep_transcript(r, masked.unmasker, merged_hash)
        # The included updates stay fetchable by members for an audit (masked ones are uniform alone).
        self.gossip.servable.update(exchange.received.values())
        self.set_phase(Phase.FINALIZE, r)
        log.info(
            "round %d: finalizing %s with %d of %d updates (excluded: %s)",
            r,
            merged_hash.short(),
            len(included),
            len(expected),
            exchange.excluded or "none",
        )
        recovered = masked.unmasker.dropped if masked is not None else []
        reasons = exclusion_reasons(exchange)
        outcomes = finalize_outcomes(info, included, recovered, reasons)
        await self.transact(self.ledger.finalize, r, merged_hash, outcomes)

    async def merge(
        self, r: int, term: int, exchange: Exchange, masked: MaskedSum | None
    ) -> tuple[dict[str, torch.Tensor], list[str]] | None:
        """Fold the stored updates into the rule in address order (a reproducible merge) and, under secure
        aggregation, unmask the sum: the merged model and the included committers, or None when the sum
        cannot be unmasked."""
        self.set_phase(Phase.MERGE, r)
        exchange.close()
        await asyncio.to_thread(exchange.fold, self.store.open_update)
        if masked is not None and not await self.unmasked(r, term, masked):
            return None
        merged, included = exchange.result()
        if Fault.FORGE_MERGE in self.faults:
            merged = forged(merged)
        return merged, included

    async def unmasked(self, r: int, term: int, masked: MaskedSum) -> bool:
        try:
            await self.unmask(r, term, masked)
        except BelowThreshold as exc:
            self.metrics.rejection("secagg_below_threshold")
            log.error("round %d: cannot unmask the sum: %s; not finalizing this term", r, exc)
            return False
        return True

    def deadline_block(self, info: RoundInfo) -> int:
        # Leave a third of the timeout for the finalize transaction itself to be mined.
        return (info.elected_block or 0) + max(1, self.task.swarm.leader_timeout * 2 // 3)

    async def limit_stalls(self, info: RoundInfo, update_bytes: int, ceiling: float) -> None:
        """Shorten the node's stall timeout for this exchange (see `stall_timeout`), and receive at most two
        updates at a time: one stalled stream cannot shut the others out, and the leader holds about three
        models (the merge's accumulator and two payloads), not one per stream."""
        two = min(self.node.limits.max_inflight_bytes, 2 * update_bytes)
        self.node.set_limits(dataclasses.replace(self.node.limits, max_inflight_bytes=two))
        blocks_left = self.deadline_block(info) - await self.block_number()
        per_block = self.blocks.seconds_per_block()
        if per_block is None:  # no pace seen yet: keep the node's own setting
            return
        senders = max(0, len(info.commits) - 1)
        stall = stall_timeout(blocks_left * per_block, update_bytes, senders, self.node.limits, ceiling)
        self.node.set_limits(dataclasses.replace(self.node.limits, stall_timeout=stall))
        log.info(
            "round %d: exchange open, %d blocks (%.1fs) to the deadline; streams stall out after %.1fs",
            info.round,
            blocks_left,
            blocks_left * per_block,
            stall,
        )

    def offer_stored(
        self, exchange: Exchange, sender: str, state: Mapping[str, torch.Tensor], digest: Digest
    ) -> None:
        """Offer an update from this site's store, whose content hash `digest` the store checked."""
        try:
            exchange.offer(sender, state, digest)
        except InvalidUpdate as exc:
            log.error("round %d: stored update of %s not merged: %s", exchange.round, sender, exc)

    async def collect(self, exchange: Exchange, info: RoundInfo) -> None:
        """Wait for every committer, or until two thirds of the leader timeout have passed."""
        deadline_block = self.deadline_block(info)
        while not exchange.complete.is_set():
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_within(exchange.complete.wait(), self.poll)
            self.checkpoint()
            if await self.block_number() >= deadline_block:
                missing = sorted(self.names.label(a) for a in exchange.pending)
                log.warning("round %d: exchange deadline; missing %s", exchange.round, missing)
                return

    # --- transport handler (called by the node) ---------------------------------------------------
    def check_offer(self, peer: PeerId, header: UpdateHeader) -> Verdict:
        """Admit an offer before its bytes move or it takes a receive slot: only for the round and term
        we are collecting, only from a committer of that round, only for the hash it committed."""
        if header.term == HANDOFF_TERM:  # a cyclic round's model, handed on (cyclic.py)
            return self.check_handoff(peer, header)
        ex = self.exchange
        if ex is None or ex.round != header.round or ex.term != header.term:
            self.nudge()  # a committer saw us elected: look at the chain now, not at the next poll
            return Verdict(False, Refusal.NOT_READY, "no exchange open for that round and term")
        sender = self.peers.members.get(peer)
        if sender is None:
            return Verdict(False, Refusal.NOT_MEMBER, "not an active member")
        if sender in ex.received:
            return Verdict(False, Refusal.DUPLICATE, f"already holds the update of {sender} for this term")
        committed = ex.expected.get(sender)
        if committed is None:
            return Verdict(False, Refusal.NOT_COMMITTER, f"{sender} did not commit in round {ex.round}")
        if header.digest != committed[0]:
            return Verdict(
                False,
                Refusal.WRONG_DIGEST,
                f"offered 0x{header.digest.hex()[:16]}.., committed 0x{committed[0].hex()[:16]}..",
            )
        if sender in ex.excluded:
            return Verdict(False, Refusal.INVALID, f"already excluded: {ex.excluded[sender]}")
        return Verdict(True)

    async def on_update(
        self, peer: PeerId, header: UpdateHeader, state: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict:
        if header.term == HANDOFF_TERM:
            return await self.on_handoff(peer, header, state, digest)
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
        if self.drops(ex, sender, digest):
            return await self.drop_update(ex, sender, digest)
        try:
            ex.admit(sender, digest)
            try:
                # The transport hands over updates as they come, several at once. Checking a compressed
                # one decodes it whole (a model-sized temporary): one at a time, so the leader's memory
                # stays within its bound. A plain one is checked where it lies, beside the others.
                async with self.decode_turn() if ex.encoding.active else contextlib.nullcontext():
                    await asyncio.to_thread(ex.inspect, sender, state)
            except InvalidUpdate as exc:
                ex.exclude_invalid(sender, exc)
                raise
        except UpdateRejected as exc:
            reason = exc.reason if isinstance(exc, InvalidUpdate) else "rejected"
            self.metrics.rejection(reason)
            log.warning("round %d: rejected update from %s: %s", ex.round, self.names.label(sender), exc)
            return Verdict(False, Refusal.INVALID, f"{reason}: {exc}")
        # Persist before accepting and acknowledging: the sender will not resend to this term's leader,
        # and the merge reads every accepted update back from the store.
        put = functools.partial(self.store.put, state, digest, keep=False)
        try:
            stored = await asyncio.get_running_loop().run_in_executor(None, put)
        except StoreError as exc:
            return Verdict(False, Refusal.INTERNAL_ERROR, f"the leader cannot store the update: {exc}")
        try:
            ex.accept(sender, stored)
        except InvalidUpdate as exc:  # a second stream of the same update was stored meanwhile, or the
            # merge began while this one was checked and stored
            duplicate = exc.reason == "duplicate"
            return Verdict(False, Refusal.DUPLICATE if duplicate else Refusal.INVALID, str(exc))
        received = {**self.journal.get(ex.round).received, sender: stored}
        self.journal.update(ex.round, received=received)
        signature = await self.sign_delivery(Receipt(ex.round, ex.term, sender, digest))
        return Verdict(True, receipt=signature)

    def decode_turn(self) -> asyncio.Lock:
        if self._decoding is None:
            self._decoding = asyncio.Lock()
        return self._decoding

    def drops(self, ex: Exchange, sender: str, digest: bytes) -> bool:
        """Test fault DROP_UPDATE: its victim is the first committer but this leader, by address, and
        only an update that hashes to its commitment is dropped (anything else is refused as usual)."""
        if Fault.DROP_UPDATE not in self.faults:
            return False
        victim = min((a for a in ex.expected if a != self.me), key=str.lower, default=None)
        return sender == victim and digest == ex.expected[sender][0]

    async def drop_update(self, ex: Exchange, sender: str, digest: bytes) -> Verdict:
        """Test fault DROP_UPDATE: acknowledge and receipt an intact update, then report it not delivered."""
        log.warning("round %d: test fault: dropping the update of %s", ex.round, self.names.label(sender))
        ex.excluded[sender] = NOT_DELIVERED
        if not ex.pending:
            ex.complete.set()
        return Verdict(True, receipt=await self.sign_delivery(Receipt(ex.round, ex.term, sender, digest)))

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

    async def on_secagg(self, peer: PeerId, header: SecAggHeader, body: bytes) -> bytes | Verdict:
        return await self.target.on_secagg(peer, header, body)

    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        return self.target.serve_model(model_hash)
