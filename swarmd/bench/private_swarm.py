"""A daemon's privacy steps, played in the learning bench's one process: DP budgets and secure aggregation.

`SwarmPrivacy` gives the bench's in-process swarm what `swarmd.daemon` gives a running site, through the
same code, so that a private arm of `swarm bench learning` / `swarm bench privacy` measures the real
mechanisms and no stand-in:

- differential privacy: `daemon.site.site_budget` per site (the plan from the task's `[privacy]` table
  and the site's data size, sigma derived through Opacus's accountant, DP-SGD switched on in the site's
  BundleTrainer by `make_private`), the budget check before each round and the epsilon spent after it;
- secure aggregation: each round the whole SecAgg+ exchange of `swarmd.privacy`: fresh X25519 keys per
  site, the graph, Shamir shares encrypted to each holder and stored in its ShareVault, each update
  quantised and masked (`mask_update`), the leader's `Unmasker` summing the masked uint32 tensors, asking
  the survivors for shares (answered by their vaults) and unmasking.

What it leaves out is the transport and the chain: bytes are handed over in memory, the advertised keys are
not signed or put on a chain, and the graph seed is not the chain's. Every site commits every round (no
dropouts): this measures what privacy does to learning, not the protocol's failover.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from swarmd.daemon.dp import SiteBudget
from swarmd.daemon.secure import is_float
from swarmd.daemon.site import site_budget
from swarmd.merge import FedAvg, Update, rule_for
from swarmd.privacy import (
    Advertised,
    RoundSecrets,
    SecAggParams,
    ShareVault,
    Unmasker,
    graph_seed,
    make_shares,
    mask_update,
    neighbourhood,
)
from swarmd.task import DPMechanism, Task
from swarmd.train import BundleTrainer


def has_privacy(task: Task) -> bool:
    return task.privacy.secure_aggregation or task.privacy.mechanism is not DPMechanism.NONE


def address_of(index: int) -> str:
    """A stand-in account address for site `index` (secure aggregation names sites by address)."""
    return "0x" + hashlib.sha256(f"bench-site-{index}".encode()).hexdigest()[:40]


class SwarmPrivacy:
    """The privacy of one in-process swarm whose sites are `trainers` (site i is `names[i]`)."""

    def __init__(self, task: Task, trainers: Sequence[BundleTrainer], names: Sequence[str], workdir: Path):
        self.task = task
        self.names = list(names)
        self.budgets: list[SiteBudget | None] = [
            site_budget(task, t, workdir / f"{name}-state") for t, name in zip(trainers, names, strict=True)
        ]
        self.secure = task.privacy.secure_aggregation
        self.params = SecAggParams.from_settings(task.privacy)
        self.address = {name: address_of(i) for i, name in enumerate(self.names)}
        self.vaults = {
            self.address[n]: ShareVault(workdir / f"{n}-state" / "secagg" / "vault") for n in names
        }
        self.unmask_error: list[
            float
        ] = []  # per round: max |unmasked mean - plain FedAvg of the same updates|

    def plans(self) -> list[dict[str, Any] | None]:
        return [b.plan.to_json() if b else None for b in self.budgets]

    def active(self) -> list[int]:
        """The sites that may train this round: those whose budget one more round does not pass."""
        return [i for i, b in enumerate(self.budgets) if b is None or not b.exhausted()]

    def privatize(
        self, i: int, update: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Site-level DP's clip and noise (DP-SGD's noise was added inside training: passes unchanged)."""
        b = self.budgets[i]
        return dict(update) if b is None else b.privatize(update, base)

    def spent(self, r: int, committed: Sequence[int]) -> dict[str, Any]:
        """Round r is merged: count it for the sites that committed; each site's epsilon so far."""
        for i in committed:
            b = self.budgets[i]
            if b is not None:
                b.spent(r)
        eps = [b.epsilon if b else 0.0 for b in self.budgets]
        return {"epsilon": {n: e for n, e in zip(self.names, eps, strict=True)}, "committed": len(committed)}

    def merge(self, r: int, base: dict[str, torch.Tensor], updates: list[Update]) -> dict[str, torch.Tensor]:
        """The round's merged model: the task's rule in the clear, or FedAvg through secure aggregation."""
        if not self.secure:
            rule = rule_for(self.task.swarm)
            rule.begin(base)
            for u in updates:
                rule.add(u)
            return rule.result()
        merged = self._secure_mean(r, base, updates)
        plain = FedAvg()
        plain.begin(base)
        for u in updates:
            plain.add(u)
        clear = plain.result()
        self.unmask_error.append(
            max(
                float((merged[k].double() - clear[k].double()).abs().max())
                for k in merged
                if is_float(merged[k])
            )
        )
        return merged

    def _secure_mean(
        self, r: int, base: dict[str, torch.Tensor], updates: list[Update]
    ) -> dict[str, torch.Tensor]:
        secrets = {self.address[u.sender]: RoundSecrets.new(r, self.address[u.sender]) for u in updates}
        advertised = [Advertised(a, *s.public) for a, s in secrets.items()]
        seed = graph_seed(r, hashlib.sha256(f"bench-round-{r}".encode()).digest())
        graph = neighbourhood(advertised, seed, self.params.neighbours)
        for owner, s in secrets.items():  # shares go to each holder's vault, its own included
            for holder, blob in make_shares(s, advertised, graph, self.params).items():
                self.vaults[holder].accept(secrets[holder], owner, blob, advertised, graph)
        committed = {self.address[u.sender]: u.n_samples for u in updates}
        unmasker = Unmasker(r, self.params, advertised, graph, committed)
        for u in updates:
            floats = {k: v.detach().numpy() for k, v in u.state.items() if is_float(v)}
            a = self.address[u.sender]
            unmasker.add(a, mask_update(secrets[a], advertised, graph, floats, u.n_samples, self.params))
        leader = sorted(secrets)[r % len(secrets)]  # the leader rotates; any survivor will do
        for site, request in unmasker.requests(0, leader).items():
            answer = self.vaults[site].answer(
                secrets[site], request, set(committed), advertised, graph, leader=leader, term=0
            )
            unmasker.accept(site, answer)
        mean = unmasker.result()
        # Buffers that are not floats (counters) are not masked: they stay the base's, as in the daemon.
        out = {k: v.clone() for k, v in base.items() if not is_float(v)}
        out.update({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in mean.items()})
        return out
