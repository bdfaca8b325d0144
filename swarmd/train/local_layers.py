"""FedBN (Li et al. 2021): the layers a site keeps to itself, and the trainer that keeps them.

`[swarm] local_layers` names them: "batchnorm" (every BatchNorm module, and every InstanceNorm
that tracks running statistics: their weights, biases and running statistics) and/or glob patterns
over state-dict names ("*.norm1.*"). Everything the swarm sees (the initial model on chain, the
update a site commits and sends, the merge, the finalized model, the audit) is the *shared* part:
the state dict without those entries. Each site keeps its own local part in
`<state_dir>/local_layers.safetensors`, seeded from the initial model and rewritten (atomically)
after every round it trains; the model it trains and evaluates is the merged shared part plus it.
"""

from __future__ import annotations

import fnmatch
import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import safetensors
import safetensors.torch
import torch

from swarmd.checkpoint import CorruptCheckpointError
from swarmd.codec import content_hash, hash_hex
from swarmd.errors import StoreError, TaskError
from swarmd.fsutil import atomic_path
from swarmd.scores import Scores
from swarmd.task import Task, WeightKind
from swarmd.train.bnstats import require_batchnorm
from swarmd.train.trainer import Trainer, TrainResult
from swarmd.train.weights import initial_network, initial_state

log = logging.getLogger("swarmd.train")

BATCHNORM = "batchnorm"
LOCAL_FILE = "local_layers.safetensors"
State = dict[str, torch.Tensor]


def _norm_names(net: torch.nn.Module) -> set[str]:
    """State-dict names of every BatchNorm, and every InstanceNorm with running statistics."""
    from torch.nn.modules.batchnorm import _BatchNorm
    from torch.nn.modules.instancenorm import _InstanceNorm

    out: set[str] = set()
    for prefix, module in net.named_modules():
        if isinstance(module, _BatchNorm) or (
            isinstance(module, _InstanceNorm) and module.track_running_stats
        ):
            out.update(f"{prefix}.{k}" if prefix else k for k in module.state_dict())
    return out


def select_local(net: torch.nn.Module, patterns: tuple[str, ...]) -> frozenset[str]:
    """The state-dict names `patterns` keep local. Raises TaskError naming a pattern that matches nothing."""
    names = list(net.state_dict())
    chosen: set[str] = set()
    for pattern in patterns:
        hit = _norm_names(net) if pattern == BATCHNORM else set(fnmatch.filter(names, pattern))
        if not hit:
            what = (
                "no BatchNorm (or InstanceNorm with running statistics) module"
                if pattern == BATCHNORM
                else (f"no parameter or buffer (e.g. {', '.join(names[:3])})")
            )
            raise TaskError(
                f"swarm.local_layers: {pattern!r} matches {what} in the bundle's network "
                f"{type(net).__name__}",
                hint="FedBN keeps normalisation layers local: use a BatchNorm bundle, or list name patterns",
            )
        chosen |= hit
    if len(chosen) == len(names):
        raise TaskError("swarm.local_layers keeps every parameter local: nothing would be shared")
    return frozenset(chosen)


def local_names(task: Task) -> frozenset[str]:
    """The names `task` keeps local (empty without FedBN); builds the bundle's network to find them."""
    return initial_split(task)[1] if task.swarm.local_layers else frozenset()


def initial_split(task: Task) -> tuple[State, frozenset[str]]:
    """The whole initial model and the names the task keeps local, from one build of the network."""
    net = initial_network(task)
    if task.swarm.batchnorm_stats == "merged":  # refused here like FedBN's patterns, before any data
        require_batchnorm(net)
    names = select_local(net, task.swarm.local_layers) if task.swarm.local_layers else frozenset()
    return initial_state(task, net), names


def split(state: Mapping[str, torch.Tensor], local: frozenset[str]) -> tuple[State, State]:
    """(shared, local) parts of a full state dict."""
    shared = {k: v for k, v in state.items() if k not in local}
    return shared, {k: v for k, v in state.items() if k in local}


def compose(shared: Mapping[str, torch.Tensor], local: Mapping[str, torch.Tensor]) -> State:
    """The model a site trains: the merged shared part plus its own local layers (disjoint names)."""
    both = set(shared) & set(local)
    if both:
        raise TaskError(f"shared and local layers overlap: {sorted(both)[:3]}")
    return {**shared, **local}


def initial_model(task: Task) -> State:
    """The round-0 model the swarm shares (its hash is the on-chain initialModelHash): the bundle's
    initial weights without the task's local layers (all of them without FedBN)."""
    full, names = initial_split(task)
    return split(full, names)[0] if names else full


class LocalLayerStore:
    """One safetensors file holding a site's local layers; metadata: the round they come from."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> tuple[State, int] | None:
        """(local layers, round they were trained in; -1: the initial model's), or None when absent."""
        try:
            data = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise StoreError(f"cannot read {self.path}: {exc.strerror or exc}") from exc
        try:
            state = safetensors.torch.load(data)
            meta = _metadata(data)
            return state, int(meta.get("round", "-1"))
        except (safetensors.SafetensorError, ValueError, RuntimeError) as exc:
            raise CorruptCheckpointError(
                f"local layers file {self.path} is corrupt or truncated: {exc}",
                hint="move it aside to restart this site's local layers from the initial model",
            ) from exc

    def save(self, local: Mapping[str, torch.Tensor], round: int) -> None:
        plain = {k: v.detach().to("cpu").contiguous() for k, v in local.items()}
        meta = {"round": str(round), "hash": hash_hex(content_hash(plain))}
        try:
            with atomic_path(self.path) as tmp:
                safetensors.torch.save_file(plain, tmp, metadata=meta)
        except (safetensors.SafetensorError, ValueError, RuntimeError) as exc:
            raise StoreError(f"cannot write local layers to {self.path}: {exc}") from exc


def _metadata(data: bytes) -> dict[str, str]:
    n = int.from_bytes(data[:8], "little")
    header = json.loads(data[8 : 8 + n])
    return dict(header.get("__metadata__") or {})


class LocalLayersTrainer(Trainer):
    """A Trainer whose callers see only the shared layers: it composes the site's local layers in
    before training and evaluation, and keeps the trained local layers out of the result."""

    def __init__(self, inner: Trainer, task: Task, state_dir: Path) -> None:
        self.inner = inner
        full, self.names = initial_split(task)
        self.store = LocalLayerStore(Path(state_dir) / LOCAL_FILE)
        loaded = self.store.load()
        if loaded is None:
            self.local, self.round = split(full, self.names)[1], -1
            self.store.save(self.local, self.round)
            log.info("local layers: %d tensors from the initial model", len(self.local))
        else:
            self.local, self.round = loaded
            _check_names(self.local, self.names, self.store.path)
            log.info(
                "local layers: resuming with %d tensors from %s (round %d, hash %s)",
                len(self.local),
                self.store.path,
                self.round,
                hash_hex(content_hash(self.local)),
            )

    def __getattr__(self, name: str) -> Any:  # n_train, batch_size, progress, make_private, ...
        return getattr(self.inner, name)

    @property
    def local_hash(self) -> str:
        return hash_hex(content_hash(self.local))

    def compose(self, shared: Mapping[str, torch.Tensor]) -> State:
        return compose(shared, self.local)

    def initialize(self) -> None:
        self.inner.initialize()

    def train(self, global_weights: dict[str, torch.Tensor], round: int) -> TrainResult:
        result = self.inner.train(self.compose(global_weights), round)
        shared, trained = split(result.weights, self.names)
        if result.weight_type == WeightKind.DIFF:  # local minus what it started from
            trained = {k: (self.local[k] + v).to(self.local[k].dtype) for k, v in trained.items()}
        self.store.save(trained, round)  # before the update leaves: a restart resumes from these
        self.local, self.round = trained, round
        return TrainResult(
            weights=shared,
            weight_type=result.weight_type,
            n_samples=result.n_samples,
            loss=result.loss,
            metrics=result.metrics,
            seconds=result.seconds,
            steps=result.steps,
        )

    def personalise(self, weights: dict[str, torch.Tensor], steps: int, round: int) -> TrainResult:
        """The whole personalised model: the final shared layers and this site's local ones, fine-tuned
        (the local layers file keeps what the rounds trained)."""
        return self.inner.personalise(self.compose(weights), steps, round)

    def evaluate(self, weights: dict[str, torch.Tensor], data_list: Path | None = None) -> Scores:
        """Scores of the shared layers with this site's own, or of a whole (personalised) model."""
        whole = weights if self.names <= weights.keys() else self.compose(weights)
        return self.inner.evaluate(whole, data_list)

    def abort(self) -> None:
        self.inner.abort()

    def finalize(self) -> None:
        self.inner.finalize()


def _check_names(local: Mapping[str, torch.Tensor], names: frozenset[str], path: Path) -> None:
    if set(local) != names:
        raise CorruptCheckpointError(
            f"local layers file {path} holds {len(local)} tensors, the task keeps {len(names)} local "
            f"(e.g. missing {sorted(names - set(local))[:2]}, unexpected {sorted(set(local) - names)[:2]})",
            hint="it belongs to another task: move it aside to restart from the initial model",
        )
