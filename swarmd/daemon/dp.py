"""The daemon's side of differential privacy: this site's plan, its accountant and its budget.

`swarmd.privacy.dp` holds the mechanisms and the Opacus accountant; this module decides, for the round
driver, whether the site may take part in a round (the budget), what epsilon it commits, and when a
round counts as spent (once its commit is on chain, never twice). The accountant's file lives in the
state dir; on a fresh one it is rebuilt from the site's commits on chain.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import torch

from swarmd.daemon.plumbing import RoundPlumbing
from swarmd.privacy.dp import Accountant, DPPlan, milli_epsilon, privatize_update
from swarmd.task import DPMechanism, Task, WeightKind

log = logging.getLogger("swarmd.privacy")


class SiteBudget:
    """One site's differential privacy across rounds."""

    def __init__(self, task: Task, plan: DPPlan, state_dir: Path) -> None:
        self.plan = plan
        self.budget = task.privacy.epsilon_budget
        self.is_diff = task.swarm.send == WeightKind.DIFF
        self.accountant = Accountant(plan, state_dir / "privacy" / "accountant.json")
        self._rng = np.random.default_rng()  # fresh OS entropy: the noise must not be reproducible
        self._told = False

    @property
    def epsilon(self) -> float:
        return self.accountant.epsilon

    def exhausted(self) -> bool:
        """True when one more round would pass the budget; logs the reason once."""
        if not self.accountant.would_exceed(self.budget):
            return False
        if not self._told:
            log.warning(
                "privacy budget spent: epsilon %.3f now, %.3f after one more round, budget %.3f; this site "
                "stops committing and keeps serving models",
                self.epsilon,
                self.accountant.epsilon_after_next(),
                self.budget,
            )
            self._told = True
        return True

    def committed_epsilon(self) -> int:
        """The cumulative epsilon (milli) after the round about to be committed: what the chain records."""
        return milli_epsilon(self.accountant.epsilon_after_next())

    def spent(self, r: int) -> float:
        """Round r's commit is on chain: count it (once, however often this is called)."""
        return self.accountant.record(r)

    def privatize(
        self, update: Mapping[str, torch.Tensor], base: Mapping[str, torch.Tensor]
    ) -> dict[str, torch.Tensor]:
        """Site-level DP: clip the update's difference to the base and add this site's noise share.
        DP-SGD adds its noise inside training, so its updates pass unchanged."""
        if self.plan.mechanism is not DPMechanism.SITE:
            return dict(update)
        arrays = {k: v.detach().numpy() for k, v in update.items()}
        base_arrays = None if self.is_diff else {k: v.detach().numpy() for k, v in base.items()}
        noised, norm = privatize_update(arrays, base_arrays, self.plan, self._rng)
        log.info("update clipped from norm %.4g to %.4g and noised", norm, min(norm, self.plan.clip))
        return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in noised.items()}


class BudgetSide(RoundPlumbing):
    """The round driver's differential-privacy steps; inert when the task has no DP (`budget` None)."""

    budget: SiteBudget | None = None

    def budget_spent(self) -> bool:
        """One more round would pass this site's epsilon budget: it stops committing (and says so)."""
        if self.budget is None or not self.budget.exhausted():
            return False
        self.state.budget_spent = True
        self.metrics.privacy(self.budget.epsilon, True)
        return True

    def count_epsilon(self, r: int) -> None:
        """Our commit of round r is on chain: its epsilon is spent (counted once per round)."""
        if self.budget is None:
            return
        self.state.epsilon = self.budget.spent(r)
        self.metrics.privacy(self.state.epsilon, self.state.budget_spent)

    async def rebuild_budget(self) -> None:
        """At start: count every round this site committed in on chain that the accountant has not
        counted. A fresh state dir reads them all; a restart reads those after the last counted one, so a
        site killed between its commit and the count, and back only after that round ended (it never
        plays that round again), still counts it."""
        if self.budget is None:
            return
        account = self.budget.accountant
        counted = account.rounds
        current = await self.chain(self.ledger.current_round)
        mine = []
        for r in range(counted[-1] + 1 if counted else 0, current + 1):
            info = await self.chain(self.ledger.round, r)
            if any(c.site == self.me for c in info.commits):
                mine.append(r)
        if mine:
            account.rebuild([*counted, *mine])
            log.info("privacy accountant: rounds %s counted from the chain", mine)
        self.state.epsilon = self.budget.epsilon
        self.metrics.privacy(self.state.epsilon, False)
