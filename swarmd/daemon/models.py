"""Getting the models a round starts from: the chain's initial model (from disk, rebuilt from the task,
or fetched from a peer) and any merged model by its hash (from disk or from peers, through gossip).

Bad local state never raises out of here (under systemd that would be a crash loop): a corrupt or
missing model is reported as a problem and fetched again until a source gives the hash the chain holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import torch

from swarmd.checkpoint import CorruptCheckpointError
from swarmd.codec import Digest, hash_hex
from swarmd.daemon.plumbing import RoundPlumbing
from swarmd.daemon.state import ProblemKind
from swarmd.daemon.store import JOURNAL_PROBLEM
from swarmd.errors import StoreError, SwarmError

log = logging.getLogger("swarmd.rounds")


def model_key(h: bytes) -> str:
    """The problems a model can have are reported under one key."""
    return f"model {hash_hex(h)}"


class ModelSide(RoundPlumbing):
    """The initial model and merged models, verified against the chain's hashes."""

    async def ensure_initial_model(self) -> dict[str, torch.Tensor]:
        """The chain's initial model: from disk, else rebuilt from the task, else from a peer.

        Never raises for bad local state (that would be a crash loop under systemd): while no
        source gives the model with the chain's hash, the daemon reports the problem and retries."""
        binding = await self.chain(self.ledger.binding)
        h = binding.initial_model_hash
        key = model_key(h)
        rebuild = True  # the task builds the same bytes every time: one failed rebuild is enough
        delay = 2.0
        while True:
            model, why = self._stored_model(h, "rebuilding it from the task, or fetching it from a peer")
            if model is None and rebuild:
                model, why = await self._rebuild_initial(h)
                rebuild = False
            if model is None:
                model = await self._fetch_initial(h)
            if model is not None:
                if not self.store.has(h):  # rebuilt while the disk was full: write it now
                    self._persist(h, model)
                self.gossip.servable.add(h)
                self.state.problems.clear(key)
                return model
            self.state.problems.report(
                key, ProblemKind.INITIAL_MODEL, why, f"fetching it from peers again in {delay:.0f}s"
            )
            await self.sleep(delay)
            delay = min(delay * 2, 30.0)

    def _stored_model(self, h: bytes, repair: str) -> tuple[dict[str, torch.Tensor] | None, str]:
        """The stored model `h`, or None and why not. A corrupt file (quarantined by the store) is
        reported as a problem, which `repair` names the cure of; whoever repairs it clears it."""
        if not self.store.holds(h):
            return None, f"no model {hash_hex(h)} on disk"
        try:
            return self.store.get(h), ""
        except CorruptCheckpointError as exc:
            self.state.problems.report(model_key(h), ProblemKind.CORRUPT_CHECKPOINT, str(exc), repair)
            return None, str(exc)

    async def _rebuild_initial(self, h: bytes) -> tuple[dict[str, torch.Tensor] | None, str]:
        from swarmd.codec import hash_against
        from swarmd.train import initial_model

        loop = asyncio.get_running_loop()
        try:
            weights = await loop.run_in_executor(self._train_pool, initial_model, self.task)
            got = hash_against(weights, h)  # a consortium deployed before protocol 4 has a v1 initial hash
        except SwarmError as exc:
            return None, f"cannot rebuild the initial model from the task: {exc}"
        if got != h:
            return None, (
                f"this site's initial model hashes to {hash_hex(got)}, the ledger says {hash_hex(h)} "
                "(do all sites run the same task, bundle and library versions?)"
            )
        return weights, ""

    def _persist(self, h: bytes, model: dict[str, torch.Tensor]) -> None:
        """Store a verified model; on a full disk serve it from memory and write it at a later call."""
        try:
            self.store.put(model, h)
        except StoreError as exc:
            log.error("cannot store model %s: %s", hash_hex(h), exc)
            self.store.remember(h, model)

    async def _fetch_initial(self, h: bytes) -> dict[str, torch.Tensor] | None:
        await self.refresh_members()
        peers = [self.peers.key(a) for a in self.peers.others()]
        fetched = bool(peers) and await self.interruptible(self.gossip.fetch_from(peers, h, -1))
        if fetched:
            with contextlib.suppress(StoreError):  # a full disk: reported, and written again below
                await self.gossip.durable(h)
            model, _ = self._stored_model(h, "fetching it again from a peer")
            return model
        return None

    async def ensure_model(self, h: bytes, r: int) -> dict[str, torch.Tensor]:
        """The model with content hash `h` (verified on chain by the caller), from disk or from peers.

        A stored copy that fails its hash is quarantined by the store; it is then fetched again."""
        while True:
            if not self.store.holds(
                h
            ):  # in memory is enough to train from; `gossip.durable` waits for the disk
                await self.interruptible(self.gossip.wait_for(h, r))
            model, _ = self._stored_model(h, "fetching it again from a peer")
            if model is not None:
                break
        self.state.problems.clear(model_key(h))
        self.gossip.servable.add(h)
        if r >= 0:
            rec = self.journal.get(r)
            if rec.merged_hash is None:
                self.journal.update(r, merged_hash=Digest(h))
            if rec.committed:  # a site resynced after losing its journal is back in the swarm
                self.state.problems.clear(JOURNAL_PROBLEM)
            self.state.last_merged_round = max(self.state.last_merged_round, r)
            self.state.last_merged_hash = Digest(h)
        return model
