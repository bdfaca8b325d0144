"""Model weights at the training boundary: the task's initial weights, and the checks on weights
going into and coming out of local training (names, shapes, dtypes, finiteness)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import torch

from swarmd.codec import first_nonfinite
from swarmd.errors import TrainingError
from swarmd.task import Task
from swarmd.train.bundle import build_network


@dataclass(frozen=True)
class TensorShape:
    shape: tuple[int, ...]
    dtype: torch.dtype


Layout = dict[str, TensorShape]


def initial_weights(task: Task) -> dict[str, torch.Tensor]:
    """The round-0 model: the bundle's network_def built on the CPU under `task.seed`.

    Same torch version + same bundle + same seed -> the same tensors on every machine, so the
    codec content hash of this dict is the on-chain initialModelHash. The global RNG is left as
    it was, so callers' randomness does not depend on whether this ran.
    """
    return initial_state(task, initial_network(task))


def initial_network(task: Task) -> torch.nn.Module:
    """The network whose state is the round-0 model (FedBN finds its local layers in its modules)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(task.seed)
        return build_network(task.bundle, task.train_config)


def initial_state(task: Task, net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The round-0 model of `net` (hand the network over: its tensors are handed out without a copy);
    with SCAFFOLD, the server control variate starts at zero inside it."""
    params = {k: p for k, p in net.named_parameters() if p.requires_grad} if task.swarm.scaffold else {}
    state = state_of(net)
    if task.swarm.scaffold:
        from swarmd.train.remedies import join_variate, zero_variate

        state = join_variate(state, zero_variate(params))
    return state


def state_of(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A network's state; hand the network over (drop it): its tensors are handed out without a copy."""
    return {k: v.detach().contiguous() for k, v in net.state_dict().items()}


def layout_of(state: Mapping[str, torch.Tensor]) -> Layout:
    return {k: TensorShape(tuple(v.shape), v.dtype) for k, v in state.items()}


def check_layout(state: Mapping[str, torch.Tensor], expected: Layout, what: str) -> None:
    """The exact names and shapes the network has: no partial loads, no silent reshapes."""
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise TrainingError(
            f"{what} do not fit the network: {len(missing)} missing (e.g. {missing[:3]}), "
            f"{len(extra)} unexpected (e.g. {extra[:3]})"
        )
    for name, spec in expected.items():
        t = state[name]
        if not isinstance(t, torch.Tensor):
            raise TrainingError(f"{what}: {name!r} is a {type(t).__name__}, not a tensor")
        if tuple(t.shape) != spec.shape:
            raise TrainingError(f"{what}: {name!r} has shape {tuple(t.shape)}, the network has {spec.shape}")
        if t.dtype.is_floating_point != spec.dtype.is_floating_point:
            raise TrainingError(f"{what}: {name!r} is {t.dtype}, the network has {spec.dtype}")


def check_finite(state: Mapping[str, torch.Tensor], what: str) -> None:
    name = first_nonfinite(state)
    if name is not None:
        raise TrainingError(f"{what}: {name!r} holds NaN or infinite values")


def detach_from(
    state: Mapping[str, torch.Tensor], live: Mapping[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """CPU, contiguous tensors that share no memory with `live` (the network's own tensors).

    A tensor that already is a fresh copy (moved off the GPU, or a computed difference) is kept
    as it is, so every tensor is copied at most once on its way to the codec.
    """
    live_ptrs = {t.data_ptr() for t in live.values() if t.device.type == "cpu" and t.numel()}
    out = {}
    for name, t in state.items():
        t = t.detach()
        if t.device.type != "cpu":
            t = t.cpu()
        elif t.numel() and t.data_ptr() in live_ptrs:
            t = t.clone(memory_format=torch.contiguous_format)
        out[name] = t if t.is_contiguous() else t.contiguous()
    return out
