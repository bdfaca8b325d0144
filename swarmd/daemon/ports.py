"""What the daemon needs from its collaborators, declared where it is used (the consumer defines the
interface): the transport's outbound calls and the trainer's round lifecycle.

`swarmd.transport.Node` and `swarmd.train.BundleTrainer` satisfy these; unit tests put small fakes
in their place. The transport's inbound side is its own `transport.Handler` protocol.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import torch

from swarmd.scores import Scores
from swarmd.train.trainer import TrainResult
from swarmd.transport import Limits, PeerId, SecAggTopic, Verdict


class Transport(Protocol):
    """The node calls the round driver and the gossip make."""

    def set_peers(self, peers: Mapping[PeerId, str], labels: Mapping[PeerId, str] | None = None) -> None: ...

    @property
    def limits(self) -> Limits: ...

    def set_limits(self, limits: Limits) -> None: ...

    async def send_update(
        self,
        peer: PeerId,
        *,
        round: int,
        term: int,
        state: Mapping[str, torch.Tensor] | None = None,
        digest: bytes | None = None,
        timeout: float | None = None,
    ) -> Verdict: ...

    async def announce(
        self, peer: PeerId, *, round: int, model_hash: bytes, timeout: float | None = None
    ) -> None: ...

    async def secagg(
        self, peer: PeerId, *, round: int, topic: SecAggTopic, body: bytes, timeout: float | None = None
    ) -> bytes: ...

    async def fetch_model(
        self,
        peer: PeerId,
        model_hash: bytes,
        *,
        max_bytes: int,
        timeout: float | None = None,
        relay: Callable[[], object] | None = None,
    ) -> dict[str, torch.Tensor]: ...


class Trainer(Protocol):
    """The part of the trainer's lifecycle a round uses (initialize and finalize belong to startup)."""

    def train(self, global_weights: dict[str, torch.Tensor], round: int) -> TrainResult: ...

    def evaluate(self, weights: dict[str, torch.Tensor], data_list: Path | None = None) -> Scores: ...

    def personalise(self, weights: dict[str, torch.Tensor], steps: int, round: int) -> TrainResult: ...

    def abort(self) -> None: ...
