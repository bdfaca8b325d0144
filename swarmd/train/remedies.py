"""FedProx and SCAFFOLD inside local training: gradient corrections added after the bundle's backward.

Both act on the gradients between `loss.backward()` and `optimizer.step()` (MONAI's
`IterationEvents.BACKWARD_COMPLETED`), so the bundle is run unchanged:

- FedProx (Li et al. 2020) adds `mu * (w - w_round)`, the gradient of `mu/2 ||w - w_round||^2`;
- SCAFFOLD (Karimireddy et al. 2020) adds `c - c_i`, the server minus the client control variate.

Under AMP the gradients are scaled at that point, so the correction is scaled the same way.

SCAFFOLD's client variate c_i+ is option I's mean gradient at the round's model (`swarmd.train.variate`,
the default) or option II's (w_round - w_local) / (K lr) (`swarm.scaffold_variate = "difference"`, refused
unless the bundle steps with plain SGD). The variates live beside the weights under the reserved
prefix `SCAFFOLD_PREFIX`: the merged model carries the server variate c, an update carries the site's
control-variate part (the delta `c_i+ - c_i` when the task sends diffs, `c + delta` when it sends
weights, so the merge treats it like the rest of the update). The client variate c_i persists in
the trainer's work dir.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from swarmd.errors import TrainingError
from swarmd.fsutil import atomic_path
from swarmd.task import SCAFFOLD_PREFIX, SwarmSettings, WeightKind
from swarmd.train.bnstats import MergedStats
from swarmd.train.variate import GradientVariate, require_plain_sgd

State = dict[str, torch.Tensor]
VARIATE_FILE = "scaffold_client.safetensors"


def split_variate(state: Mapping[str, torch.Tensor]) -> tuple[State, State]:
    """(the model, the control-variate part keyed by parameter name) of a state dict."""
    model = {k: v for k, v in state.items() if not k.startswith(SCAFFOLD_PREFIX)}
    variate = {k[len(SCAFFOLD_PREFIX) :]: v for k, v in state.items() if k.startswith(SCAFFOLD_PREFIX)}
    return model, variate


def join_variate(model: Mapping[str, torch.Tensor], variate: Mapping[str, torch.Tensor]) -> State:
    """The model with the control-variate part under the reserved prefix."""
    return {**model, **{SCAFFOLD_PREFIX + k: v for k, v in variate.items()}}


def zero_variate(params: Mapping[str, torch.Tensor]) -> State:
    """c = 0 for every floating-point trainable parameter (SCAFFOLD's starting variates)."""
    return {k: torch.zeros(v.shape, dtype=v.dtype) for k, v in params.items() if v.is_floating_point()}


def client_variate_update(
    c_i: State, c: State, w_round: State, w_local: State, steps: int, lr: float
) -> State:
    """SCAFFOLD option II: c_i+ = c_i - c + (w_round - w_local) / (K * lr)."""
    if steps < 1 or not (math.isfinite(lr) and lr > 0.0):
        raise TrainingError(
            f"SCAFFOLD needs K >= 1 local steps and a learning rate > 0, got K={steps}, lr={lr}"
        )
    scale = 1.0 / (steps * lr)
    return {k: c_i[k] - c[k] + (w_round[k] - w_local[k]) * scale for k in c}


class Corrections:
    """The per-round gradient corrections of one trainer: FedProx's anchor and SCAFFOLD's c - c_i."""

    def __init__(self, swarm: SwarmSettings) -> None:
        self.mu = swarm.prox_mu
        self.scaffold = swarm.scaffold
        self._params: dict[str, torch.nn.Parameter] = {}
        self._anchor: State = {}  # w_round, on the parameters' device
        self._shift: State = {}  # c - c_i, on the parameters' device

    @property
    def active(self) -> bool:
        return self.mu > 0.0 or self.scaffold

    def attach(self, engine: Any, network: torch.nn.Module) -> None:
        """Hook the engine's backward; a no-op when neither remedy is on."""
        if not self.active:
            return
        from monai.engines.utils import IterationEvents

        self._params = {k: p for k, p in network.named_parameters() if p.requires_grad}
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self.on_backward)

    def begin_round(self, w_round: Mapping[str, torch.Tensor], shift: Mapping[str, torch.Tensor]) -> None:
        """Anchor this round's corrections: the round's starting weights and c - c_i (SCAFFOLD)."""
        if self.mu > 0.0:
            self._anchor = {k: w_round[k].to(p.device, p.dtype) for k, p in self._params.items()}
        self._shift = {k: shift[k].to(p.device, p.dtype) for k, p in self._params.items() if k in shift}

    def on_backward(self, engine: Any) -> None:
        scaler = getattr(engine, "scaler", None)
        scale = float(scaler.get_scale()) if getattr(engine, "amp", False) and scaler is not None else 1.0
        # Accumulating gradients, the engine sums `acc` backward passes per optimizer step: add 1/acc each.
        scale /= max(1, int(getattr(engine, "accumulation_steps", 1)))
        with torch.no_grad():
            for name, p in self._params.items():
                if p.grad is None:
                    continue
                if self.mu > 0.0:
                    p.grad.add_(p - self._anchor[name], alpha=self.mu * scale)
                shift = self._shift.get(name)
                if shift is not None:
                    p.grad.add_(shift, alpha=scale)


class ClientVariate:
    """c_i, persisted in `workdir/VARIATE_FILE` with the round that produced it and the one before.

    Keeping both makes a retrain of the same round (a restart before the update was stored) start
    from the same c_i as the first attempt, so c_i advances once per round trained."""

    def __init__(self, workdir: Path, params: Mapping[str, torch.Tensor]) -> None:
        self.path = Path(workdir) / VARIATE_FILE
        self._zero = zero_variate(params)

    def before(self, round: int) -> State:
        """c_i at the start of `round`: the newest stored one from an earlier round, else zeros."""
        stored = self._load()
        if stored is None:
            return dict(self._zero)
        produced, prev, nxt = stored
        return nxt if produced < round else prev

    def save(self, round: int, before: State, after: State) -> None:
        from safetensors.torch import save_file

        tensors = {f"prev/{k}": v.contiguous() for k, v in before.items()}
        tensors.update({f"next/{k}": v.contiguous() for k, v in after.items()})
        with atomic_path(self.path) as tmp:
            save_file(tensors, str(tmp), metadata={"round": str(round)})

    def _load(self) -> tuple[int, State, State] | None:
        from safetensors import safe_open

        if not self.path.exists():
            return None
        try:
            with safe_open(str(self.path), framework="pt") as f:
                produced = int((f.metadata() or {})["round"])
                parts: dict[str, State] = {"prev": {}, "next": {}}
                for key in f.keys():  # noqa: SIM118 (a safe_open handle is no dict)
                    part, _, name = key.partition("/")
                    parts[part][name] = f.get_tensor(key)
        except Exception as exc:  # noqa: BLE001 (safetensors raises its own types: one named error)
            raise TrainingError(
                f"SCAFFOLD client variate {self.path} is unreadable: {exc}",
                hint="remove it to restart this site's variate from zero",
            ) from None
        for part in parts.values():
            if set(part) != set(self._zero):
                raise TrainingError(
                    f"SCAFFOLD client variate {self.path} does not fit the network",
                    hint="remove it to restart this site's variate from zero",
                )
        return produced, parts["prev"], parts["next"]


def optimizer_steps(engine: Any, iterations: int) -> int:
    """Optimizer steps in a round of `iterations` (SCAFFOLD's K): fewer when the engine accumulates
    gradients (MONAI's `accumulation_steps`; a round's last partial group is flushed as one step)."""
    acc = max(1, int(getattr(engine, "accumulation_steps", 1)))
    return -(-iterations // acc)


def optimizer_lr(optimizer: Any) -> float:
    """The learning rate SCAFFOLD's option II divides by: the bundle optimizer's, read after the round
    (so a scheduler's current value); parameter groups with different rates are refused."""
    rates = {float(g["lr"]) for g in getattr(optimizer, "param_groups", [])}
    if len(rates) != 1:
        raise TrainingError(
            "SCAFFOLD needs one learning rate for the whole network, "
            f"the bundle's optimizer has {sorted(rates)}"
        )
    return rates.pop()


class Remedies:
    """What the trainer calls around a round: FedProx's and SCAFFOLD's state for one site, and merged
    BatchNorm statistics (`swarmd.train.bnstats`)."""

    def __init__(self, swarm: SwarmSettings, workdir: Path) -> None:
        self.swarm = swarm
        self.workdir = Path(workdir)
        self.corrections = Corrections(swarm)
        self._variate: ClientVariate | None = None
        self._gradient: GradientVariate | None = None  # option I's c_i+, computed as each round starts
        self._round: tuple[int, State, State, State] | None = None  # round, c, c_i, w_round (params)

    def attach(self, engine: Any, network: torch.nn.Module) -> State:
        """Hook the engine; returns the reserved tensors a SCAFFOLD model adds to the network's.
        Refuses option II with an optimizer other than plain SGD."""
        self.corrections.attach(engine, network)
        if self.swarm.batchnorm_stats == "merged":
            MergedStats(self.swarm.local_steps).attach(engine, network)
        if not self.swarm.scaffold:
            return {}
        if self.swarm.scaffold_variate == "difference":
            require_plain_sgd(engine.optimizer)
        else:
            self._gradient = GradientVariate(self.swarm.local_steps)
            self._gradient.attach(engine, network)
        params = {k: p.detach().cpu() for k, p in network.named_parameters() if p.requires_grad}
        self._variate = ClientVariate(self.workdir, params)
        return join_variate({}, zero_variate(params))

    def start(self, global_weights: Mapping[str, torch.Tensor], round: int) -> State:
        """The network's part of the round's weights; anchors the corrections."""
        model, c = split_variate(global_weights)
        shift: State = {}
        if self._variate is not None:
            c_i = self._variate.before(round)
            shift = {k: c[k] - c_i[k] for k in c_i}
            w_round = {k: model[k].detach().clone() for k in c_i}
            self._round = (round, {k: c[k] for k in c_i}, c_i, w_round)
        if self._gradient is not None:
            self._gradient.reset()
        if self.corrections.active:
            self.corrections.begin_round(model, shift)
        return model

    def finish(self, weights: State, kind: WeightKind, engine: Any, iterations: int) -> State:
        """The update with SCAFFOLD's control-variate part (c_i+ - c_i for diffs, c + it for weights);
        c_i+ is stored before the update leaves the trainer. `engine` ran `iterations` this round."""
        if self._variate is None or self._round is None:
            return weights
        round, c, c_i, w_round = self._round
        if self._gradient is not None:
            after = self._gradient.take()
        else:
            w_local = {k: w_round[k] + weights[k] if kind is WeightKind.DIFF else weights[k] for k in c_i}
            steps, lr = optimizer_steps(engine, iterations), optimizer_lr(engine.optimizer)
            after = client_variate_update(c_i, c, w_round, w_local, steps, lr)
        self._variate.save(round, c_i, after)
        delta = {k: after[k] - c_i[k] for k in c_i}
        part = delta if kind is WeightKind.DIFF else {k: c[k] + delta[k] for k in c_i}
        return join_variate(weights, part)
