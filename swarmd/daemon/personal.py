"""Personalisation (`[swarm] personalise_steps`): after the last round, each site fine-tunes the final
merged model on its own data and keeps the result as its personalised model.

It never touches the chain: the file `<state_dir>/personalised.safetensors` holds it (whole: with FedBN
its local layers are in it), the journal and `swarm status` its content hash, the model it came from
and the scores of both the global and the personalised model on the site's eval list. A restart after
it was made only reads it back.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

import torch

from swarmd.checkpoint import save_file
from swarmd.codec import content_hash, hash_hex
from swarmd.daemon.plumbing import RoundPlumbing, StopRequested
from swarmd.errors import SwarmError
from swarmd.scores import Scores, parse_scores

log = logging.getLogger("swarmd.personal")

PERSONAL_FILE = "personalised.safetensors"
T = TypeVar("T")


@dataclass(frozen=True)
class Personalised:
    """What the journal keeps of a site's personalised model."""

    hash: str  # content hash of the whole fine-tuned model (0x hex)
    base: str  # the final merged model it was fine-tuned from (0x hex)
    steps: int
    metrics: Scores = field(default_factory=dict)  # the personalised model's scores
    global_metrics: Scores = field(default_factory=dict)  # the final merged model's, on the same list

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> Personalised | None:
        try:
            return cls(
                hash=str(doc["hash"]),
                base=str(doc["base"]),
                steps=int(doc["steps"]),
                metrics=parse_scores(doc.get("metrics", {})),
                global_metrics=parse_scores(doc.get("global_metrics", {})),
            )
        except (KeyError, TypeError, ValueError):
            return None


class PersonalSide(RoundPlumbing):
    """The driver's personalisation step, run once the task's last round is final."""

    async def personalise(self, last: int, base_hash: bytes, model: dict[str, torch.Tensor]) -> None:
        steps = self.task.swarm.personalise_steps
        if steps == 0:
            return
        path = self.journal.path.parent / PERSONAL_FILE
        done = Personalised.from_json(self.journal.personalised)
        if done is not None and done.base == hash_hex(base_hash) and path.exists():
            self._show(done)
            return
        try:
            result = await self._in_trainer(self.trainer.personalise, model, steps, last + 1)
            save_file(result.weights, path)
            mine = await self._in_trainer(self.trainer.evaluate, result.weights, self.eval_list)
            theirs = self.journal.get(last).metrics or await self._in_trainer(
                self.trainer.evaluate, model, self.eval_list
            )
        except SwarmError as exc:
            log.error("personalisation failed: %s: %s", type(exc).__name__, exc)
            return
        record = Personalised(
            hash_hex(content_hash(result.weights)), hash_hex(base_hash), steps, mine, theirs
        )
        self.journal.set_personalised(record.to_json())
        self._show(record)
        log.info(
            "personalised model %s (%d steps from %s) scores %s; the global model %s",
            record.hash,
            steps,
            record.base,
            mine,
            theirs,
        )

    async def _in_trainer(self, fn: Callable[..., T], *args: Any) -> T:
        """`fn(*args)` on the training thread; a stop aborts it (fine-tuning may run many steps)."""
        work = asyncio.get_running_loop().run_in_executor(self._train_pool, fn, *args)
        try:
            return await self.interruptible(work)
        except StopRequested:
            self.trainer.abort()
            raise

    def _show(self, record: Personalised) -> None:
        self.state.personalised_hash, self.state.personalised_metrics = record.hash, dict(record.metrics)
