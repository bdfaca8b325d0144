"""The daemon's privacy accountant at start: every round this site committed in on chain is counted,
including one it was killed in after committing and came back to only after that round had ended."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

from swarmd.daemon.dp import BudgetSide, SiteBudget
from swarmd.privacy.dp import epsilon_for, plan_for
from swarmd.task import DPMechanism, PrivacySettings, WeightKind

ME, OTHER = "0x" + "a" * 40, "0x" + "b" * 40


class _Ledger:
    def __init__(self, committers: list[list[str]]) -> None:
        self.committers = committers

    def current_round(self) -> int:
        return len(self.committers) - 1

    def round(self, r: int) -> Any:
        return SimpleNamespace(commits=[SimpleNamespace(site=s) for s in self.committers[r]])


class _Side(BudgetSide):
    """BudgetSide with the chain called inline and the state reduced to what it writes."""

    def __init__(self, budget: SiteBudget, ledger: _Ledger) -> None:
        self.budget, self.ledger, self.me = budget, ledger, ME
        self.state = SimpleNamespace(epsilon=0.0, budget_spent=False)
        self.metrics = SimpleNamespace(privacy=lambda *a: None)

    async def chain(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)


def _budget(state_dir: Path) -> SiteBudget:
    privacy = PrivacySettings(
        mechanism=DPMechanism.SAMPLE, noise_multiplier=1.5, delta=1e-5, epsilon_budget=50
    )
    plan = plan_for(
        privacy, rounds=5, local_steps=2, n_samples=16, batch_size=8, n_sites=2, secure_aggregation=False
    )
    assert plan is not None
    task = SimpleNamespace(privacy=privacy, swarm=SimpleNamespace(send=WeightKind.WEIGHTS))
    return SiteBudget(task, plan, state_dir)  # type: ignore[arg-type]


async def test_a_round_committed_before_a_kill_and_ended_meanwhile_is_counted(tmp_path: Path) -> None:
    budget = _budget(tmp_path)
    budget.spent(0)  # counted before the kill; round 1's commit was mined, its count was not
    side = _Side(budget, _Ledger([[ME, OTHER], [OTHER, ME], [OTHER]]))
    await side.rebuild_budget()
    assert budget.accountant.rounds == (0, 1)
    assert side.state.epsilon == budget.epsilon == epsilon_for(budget.plan, 2)
    await side.rebuild_budget()  # idempotent: nothing is counted twice
    assert budget.accountant.rounds == (0, 1)


async def test_a_fresh_state_dir_counts_every_commit_on_chain(tmp_path: Path) -> None:
    budget = _budget(tmp_path)
    side = _Side(budget, _Ledger([[ME], [OTHER], [ME, OTHER]]))
    await side.rebuild_budget()
    assert budget.accountant.rounds == (0, 2)
