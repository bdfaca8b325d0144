"""Cyclic weight transfer (`[round] mode = "cyclic"`): a round in which the model visits the sites one
after another instead of being merged.

The order is `swarmd.ledger.cyclic.visit_order` (drawn from the round's base hash, on chain). The first
site of the order trains from the round's base model, commits the hash of the model it trained, and hands
that model to the next site over the transport: an update offer under term 0 (`HANDOFF_TERM`; leader
terms start at 1), the same codec frames, limits and hash check as an update to a leader. A receiver
takes a handoff only while it waits for one, only from the round's latest committer on chain and only
for the hash that committer committed; it stores the model, trains from it, and commits in turn. A site
that does not take the model within `[round] handoff_timeout` seconds is skipped, and the holder offers
it to the next. So the chain's commits, in order, are the path, and each was trained from the one
before. A site other than the first trains from the base itself only when the round has no commit and
none of the sites before it answers a probe (they are all down).

Commits close, secrets are revealed and a leader is elected exactly as in a swarm round; the elected
leader finalizes the last commit on the path whose model it can get (its committer serves it by hash),
including the path up to it and reporting any later commit NOT_DELIVERED. The model then spreads as
usual. `RoundDriver.play_round` (rounds.py) hands a cyclic round to `play_cyclic`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import torch

from swarmd.aio import wait_within
from swarmd.codec import Digest
from swarmd.daemon.accounting import finalize_outcomes
from swarmd.daemon.models import ModelSide
from swarmd.daemon.state import Phase
from swarmd.errors import InvalidUpdate, StoreError, TransportError, WireError
from swarmd.ledger import RoundInfo, RoundStatus
from swarmd.ledger import errors as reverts
from swarmd.ledger.cyclic import path_end, path_included, successors, visit_order
from swarmd.merge import validate
from swarmd.transport import PeerId, Refusal, UpdateHeader, Verdict

log = logging.getLogger("swarmd.rounds")

HANDOFF_TERM = 0  # a handoff travels as an update offer of this term; a leader's terms start at 1


@dataclass
class Handoff:
    """What this site waits for in a cyclic round: the model, from the round's latest committer."""

    round: int
    info: RoundInfo  # the round as this site last read it (check_offer cannot read the chain)
    base: dict[str, torch.Tensor]  # the round's base model: what a handed-on model must look like
    got: asyncio.Event = field(default_factory=asyncio.Event)
    sender: str | None = None
    digest: Digest | None = None


def passed(order: list[str], me: str, info: RoundInfo) -> bool:
    """Whether the path has passed this site: a site after it in the order has committed."""
    later = {a.lower() for a in successors(order, me)}
    return any(c.site.lower() in later for c in info.commits)


async def first_taker(
    targets: list[str], offer: Callable[[str], Awaitable[bool]]
) -> tuple[str | None, list[str]]:
    """Offer the model to `targets` in turn: the first that takes it, and the ones skipped before it."""
    skipped: list[str] = []
    for target in targets:
        if await offer(target):
            return target, skipped
        skipped.append(target)
    return None, skipped


class CyclicSide(ModelSide):
    """This site's part in a cyclic round: wait for the model, train and commit, hand it on, and (as the
    elected leader) finalize the path."""

    handoff: Handoff | None = None

    if TYPE_CHECKING:  # the round steps a cyclic round shares with a swarm round (rounds.py)

        async def trained_update(self, r: int, info: RoundInfo, base: dict[str, torch.Tensor]) -> Digest: ...

        async def commit_trained(self, r: int, info: RoundInfo, base: dict[str, torch.Tensor]) -> bool: ...

        async def until_elected(self, r: int) -> RoundInfo: ...

        async def until_settled(self, r: int, term: int) -> RoundInfo: ...

        async def conclude(self, r: int, info: RoundInfo) -> None: ...

        async def sit_out(self, r: int) -> None: ...

        def serve_committed(self) -> None: ...

        def budget_spent(self) -> bool: ...

        def count_epsilon(self, r: int) -> None: ...

    @property
    def handoff_timeout(self) -> float:
        return self.task.round.handoff_timeout

    # --- the round ------------------------------------------------------------------------------
    async def play_cyclic(self, r: int) -> None:
        await self.refresh_members()
        self.serve_committed()
        info = await self.chain(self.ledger.round, r)
        self.set_phase(Phase.SYNC, r)
        base = await self.ensure_model(info.base_hash, r - 1)
        order = visit_order(r, info.base_hash, self.peers.endpoints)
        if info.commit_of(self.me) is not None:
            self.count_epsilon(r)  # a restart between our commit and its counting
        else:
            playing = info.status == RoundStatus.OPEN and not self.budget_spent() and self.me in order
            if not playing or not await self.take_turn(r, info, order, base):
                await self.sit_out(r)
                return
        await self.hand_on(r, order)
        info = await self.until_elected(r)
        while info.status == RoundStatus.ELECTED:
            self.state.leader, self.state.term = info.leader, info.term
            if info.leader == self.me:
                await self.finalize_path(r, info)
            info = await self.until_settled(r, info.term)
        await self.conclude(r, info)

    async def take_turn(
        self, r: int, info: RoundInfo, order: list[str], base: dict[str, torch.Tensor]
    ) -> bool:
        """Wait for the model, train from it and commit; False when the path passed us or commits closed."""
        start = await self.wait_for_model(r, info, order, base)
        if start is None:
            return False
        await self.trained_update(r, info, start)
        parent = next(iter(self.journal.get(r).received.values()), None)
        now = await self.chain(self.ledger.round, r)
        latest = now.commits[-1].update_hash if now.commits else None
        if latest != parent:  # someone committed while we trained: our model would fork the path
            log.warning("round %d: the path moved on while we trained; not committing", r)
            return False
        try:
            ok = await self.commit_trained(r, info, start)
        except reverts.CommitsClosed:
            log.warning("round %d: commits closed before our turn ended", r)
            return False
        self.serve_committed()  # the next site, or the leader, fetches it by hash
        return ok

    # --- waiting for the model -----------------------------------------------------------------
    async def wait_for_model(
        self, r: int, info: RoundInfo, order: list[str], base: dict[str, torch.Tensor]
    ) -> dict[str, torch.Tensor] | None:
        """The model this site trains from: the base (first live site), a handed-on one, or None."""
        kept = self.journal.get(r).received  # a restart after taking the model
        if kept:
            h = next(iter(kept.values()))
            if self.store.has(h):
                return self.store.get(h)
        if order[0] == self.me and not info.commits:
            return base
        self.set_phase(Phase.EXCHANGE, r)
        wait = Handoff(round=r, info=info, base=base)
        self.handoff = wait
        try:
            return await self._until_handed(wait, order)
        finally:
            self.handoff = None

    async def _until_handed(self, wait: Handoff, order: list[str]) -> dict[str, torch.Tensor] | None:
        r = wait.round
        before = order[: order.index(self.me)]
        probe_at = time.monotonic() + self.handoff_timeout
        while not wait.got.is_set():
            info = wait.info = await self.chain(self.ledger.round, r)
            if passed(order, self.me, info) or await self.commits_closed(info):
                log.info("round %d: the path ended or passed us; sitting this round out", r)
                return None
            if not info.commits and time.monotonic() >= probe_at:
                if not await self.any_answers(r, info.base_hash, before):
                    log.warning("round %d: no site before us answers; starting the path here", r)
                    return wait.base
                probe_at = time.monotonic() + self.handoff_timeout
            with contextlib.suppress(asyncio.TimeoutError):
                await wait_within(wait.got.wait(), max(self.poll, 0.2))
            self.checkpoint()
        log.info("round %d: took the model from %s", r, self.names.label(wait.sender or ""))
        return self.store.get(wait.digest or b"")

    async def commits_closed(self, info: RoundInfo) -> bool:
        """Whether round `info` takes no more commits: the path can go no further this round."""
        if info.status != RoundStatus.OPEN or info.revealed:
            return True
        r = info.round
        return await self.chain(self.ledger.can_reveal, r) or await self.chain(self.ledger.can_elect, r)

    async def any_answers(self, r: int, base_hash: bytes, sites: list[str]) -> bool:
        """Whether any of `sites` answers within the handoff timeout (an announce of the round's base
        model, which every live site holds: it costs the receiver a lookup in its own store)."""

        async def answers(site: str) -> bool:
            try:
                key = self.peers.key(site)
                await self.node.announce(key, round=r, model_hash=base_hash, timeout=self.handoff_timeout)
            except (TransportError, WireError, KeyError):
                return False
            return True

        return any(await asyncio.gather(*(answers(s) for s in sites)))

    # --- handing on ------------------------------------------------------------------------------
    async def hand_on(self, r: int, order: list[str]) -> None:
        """Offer our model to the sites after us until one takes it; skip each that does not in time."""
        rec = self.journal.get(r)
        if rec.delivered_term == HANDOFF_TERM or not rec.committed:
            return
        self.set_phase(Phase.EXCHANGE, r)
        if await self.commits_closed(await self.chain(self.ledger.round, r)):
            log.info("round %d: commits closed; the path ends here", r)
            self.journal.update(r, delivered_term=HANDOFF_TERM)
            return
        update = self.store.get(self.own_update(r))
        taker, skipped = await first_taker(successors(order, self.me), lambda t: self.offer_to(r, t, update))
        for site in skipped:
            log.warning("round %d: %s did not take the model in time; skipped", r, self.names.label(site))
        if taker is None:
            log.info("round %d: no site after us took the model; the path ends here", r)
        else:
            log.info("round %d: handed the model on to %s", r, self.names.label(taker))
        self.journal.update(r, delivered_term=HANDOFF_TERM)

    async def offer_to(self, r: int, target: str, update: dict[str, torch.Tensor]) -> bool:
        """One target: retried while it is not ready yet, for at most the handoff timeout."""
        give_up = time.monotonic() + self.handoff_timeout
        while (left := give_up - time.monotonic()) > 0:
            self.checkpoint()
            now = await self.chain(self.ledger.round, r)
            if target not in self.peers.endpoints or await self.commits_closed(now):
                return False  # commits closed: the path ends with us
            if now.commits[-1].site != self.me:
                return False  # the path moved on without us
            try:
                verdict = await self.node.send_update(
                    self.peers.key(target), round=r, term=HANDOFF_TERM, state=update, timeout=left
                )
            except (TransportError, WireError) as exc:
                log.info("round %d: handing on to %s failed: %s", r, self.names.label(target), exc)
                return False
            if verdict.ok or verdict.reason == Refusal.DUPLICATE:
                return True
            if verdict.reason != Refusal.NOT_READY:
                log.warning(
                    "round %d: %s refused the model: %s %s", r, target, verdict.reason, verdict.detail
                )
                return False
            await self.sleep(min(0.5, max(left, 0.0)))
        return False

    # --- the receiver's checks (called by the transport handler, leader.py) ----------------------
    def check_handoff(self, peer: PeerId, header: UpdateHeader) -> Verdict:
        wait = self.handoff
        if wait is None or wait.round != header.round:
            self.nudge()
            return Verdict(False, Refusal.NOT_READY, "not waiting for the model of that round")
        sender = self.peers.members.get(peer)
        if sender is None:
            return Verdict(False, Refusal.NOT_MEMBER, "not an active member")
        return self._handoff_refusal(wait, sender, header.digest) or Verdict(True)

    def _handoff_refusal(self, wait: Handoff, sender: str, digest: bytes) -> Verdict | None:
        if wait.sender is not None:
            return Verdict(False, Refusal.DUPLICATE, f"already took round {wait.round}'s model")
        last = wait.info.commits[-1] if wait.info.commits else None
        if last is None or last.site != sender:
            self.nudge()  # our view may predate its commit: read the chain now; it retries
            return Verdict(False, Refusal.NOT_READY, f"{sender} is not the round's latest committer")
        if digest != last.update_hash:
            return Verdict(False, Refusal.WRONG_DIGEST, "not the hash the sender committed on chain")
        return None

    async def on_handoff(
        self, peer: PeerId, header: UpdateHeader, state: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict:
        wait = self.handoff
        sender = self.peers.members.get(peer)
        if wait is None or wait.round != header.round or sender is None:
            return Verdict(False, Refusal.NOT_READY, "not waiting for the model of that round")
        wait.info = await self.chain(self.ledger.round, wait.round)  # the bytes hash to `digest`
        refusal = self._handoff_refusal(wait, sender, digest)
        if refusal is not None:
            return refusal
        try:
            validate(state, wait.base)
        except InvalidUpdate as exc:
            return Verdict(False, Refusal.INVALID, f"{exc.reason}: {exc}")
        try:
            stored = await asyncio.to_thread(self.store.put, state, digest)
        except StoreError as exc:
            return Verdict(False, Refusal.INTERNAL_ERROR, f"cannot store the model: {exc}")
        self.journal.update(wait.round, received={sender: stored})
        wait.sender, wait.digest = sender, stored
        wait.got.set()
        return Verdict(True)

    # --- finalize, as the elected leader ---------------------------------------------------------
    async def finalize_path(self, r: int, info: RoundInfo) -> None:
        """Publish the path's last model this leader can get; no finalize (the term times out) without."""
        self.set_phase(Phase.FINALIZE, r)
        self.journal.update(r, led=True)
        self.metrics.led()
        held: list[str] = []
        for c in reversed(info.commits):
            if info.has_revealed(c.site) and await self.obtain(r, c.site, c.update_hash):
                held.append(c.site)
                break
        end = path_end(info, held)
        if end is None:
            log.error("round %d: no model on the path can be had; not finalizing this term", r)
            return
        final = info.commits[end]
        included = path_included(info, end)
        outcomes = finalize_outcomes(info, included, [], {})
        log.info(
            "round %d: finalizing the path's model %s (%d of %d commits on the path)",
            r,
            Digest(final.update_hash).short(),
            len(included),
            len(info.commits),
        )
        await self.transact(self.ledger.finalize, r, final.update_hash, outcomes)

    async def obtain(self, r: int, site: str, h: bytes) -> bool:
        """Hold model `h` (fetched from `site`, which committed it, when we do not): True when we do."""
        if not self.store.has(h):
            try:
                fetch = self.node.fetch_model(self.peers.key(site), h, max_bytes=self.gossip.max_bytes)
                state = await wait_within(fetch, self.handoff_timeout)
            except (TransportError, WireError, KeyError, asyncio.TimeoutError) as exc:
                log.warning("round %d: cannot fetch the model of %s: %s", r, self.names.label(site), exc)
                return False
            await asyncio.to_thread(self.store.put, state, h)
        self.gossip.servable.add(h)
        return True
