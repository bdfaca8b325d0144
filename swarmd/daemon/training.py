"""Training: the trainer's call on its own thread, and training the next round ahead of its opening.

In a sharded round every committer holds the merged model the moment it has assembled it, before the
leader's finalize transaction is mined and read, the next round opened and its base read (0.2-0.4 s
at N = 3 on a WAN bench round). A site whose training carries no state of its own from round to round
(no SCAFFOLD variates, no FedBN layers, no DP-SGD, no secure aggregation) starts the next round's
training on that model at once; the round takes the result only if it opens on exactly that base, by
content hash. Any other base (a plan re-made after we assembled, a new term, a leader that finalized
something else) discards it and trains again: the trainer is then one run ahead, as after a round that
closed while we trained it. A discarded run is waited out, not aborted: an abort that loses the race
with the run's end would stop the next run instead (`Trainer.abort`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import cast

import torch

from swarmd.codec import Digest
from swarmd.daemon.plumbing import RoundPlumbing, StopRequested
from swarmd.errors import SwarmError
from swarmd.task import DPMechanism
from swarmd.train.trainer import TrainResult

log = logging.getLogger("swarmd.rounds")


@dataclass
class Ahead:
    """A training of `round` from the model `base_hash`, started before that round opened."""

    round: int
    base_hash: bytes
    work: asyncio.Future[TrainResult]


class TrainingSide(RoundPlumbing):
    """The driver's training: a fresh run, or the one run ahead on the same base."""

    _ahead: Ahead | None = None

    def may_train_ahead(self) -> bool:
        """Whether a run ahead is the run the round would make: sharded (the model is held before it is
        final) and no per-site state that a discarded run would have moved on."""
        swarm, privacy = self.task.swarm, self.task.privacy
        return (
            self.task.exchange.topology == "sharded"
            and not privacy.secure_aggregation
            and privacy.mechanism == DPMechanism.NONE
            and not swarm.scaffold
            and not swarm.local_layers
        )

    async def train_ahead(self, r: int, base_hash: bytes, model: Mapping[str, torch.Tensor]) -> None:
        """Start round r's training from `model` (content hash `base_hash`) now, if the task allows."""
        if r >= self.task.swarm.rounds or not self.may_train_ahead():
            return
        if self._ahead is not None:
            if (self._ahead.round, self._ahead.base_hash) == (r, base_hash):
                return
            await self._discard(self._ahead, "a newer base came first")
        loop = asyncio.get_running_loop()
        work = loop.run_in_executor(self._train_pool, self.trainer.train, dict(model), r)
        self._ahead = Ahead(r, base_hash, work)
        log.info("round %d: training ahead on %s, before it is final", r, Digest(base_hash).short())

    async def train(self, base: dict[str, torch.Tensor], r: int, base_hash: bytes) -> TrainResult:
        """Round r's training from `base` (content hash `base_hash`): the run ahead on that base, or a
        fresh one. A stop aborts it (StopRequested)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and (ahead.round, ahead.base_hash) == (r, base_hash):
            log.info("round %d: the run ahead on %s is the round's training", r, Digest(base_hash).short())
            work = ahead.work
        else:
            if ahead is not None:
                await self._discard(ahead, f"round {r} opened on {Digest(base_hash).short()}")
            work = asyncio.get_running_loop().run_in_executor(self._train_pool, self.trainer.train, base, r)
        stop = asyncio.ensure_future(self.stopping.wait())
        either = cast("set[asyncio.Future[object]]", {work, stop})
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
        if not work.done():
            self.trainer.abort()
            with contextlib.suppress(SwarmError):
                await work
            raise StopRequested
        return work.result()

    async def stop_training_ahead(self) -> None:
        """On the way out: a run ahead still going is aborted (nothing runs after it)."""
        ahead, self._ahead = self._ahead, None
        if ahead is not None and not ahead.work.done():
            self.trainer.abort()
            with contextlib.suppress(SwarmError):
                await ahead.work

    async def _discard(self, ahead: Ahead, why: str) -> None:
        log.info(
            "round %d: the run ahead on %s is not used (%s)",
            ahead.round,
            Digest(ahead.base_hash).short(),
            why,
        )
        with contextlib.suppress(SwarmError):
            await ahead.work
