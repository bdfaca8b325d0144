"""The named errors of differential privacy: bad DP settings or plans, a spent budget, a bad state file."""

from __future__ import annotations

from swarmd.errors import StoreError, TaskError


class DPError(TaskError):
    """DP settings that cannot give the promised guarantee (a task-validation error, exit 2)."""


class BudgetSpent(DPError):
    """One more round would take the site past its epsilon budget; it must stop committing."""

    def __init__(self, epsilon: float, after_next: float, budget: float) -> None:
        self.epsilon = epsilon
        self.after_next = after_next
        self.budget = budget
        super().__init__(
            f"privacy budget spent: epsilon is {epsilon:.3f}, one more round would make it "
            f"{after_next:.3f}, the budget is {budget:g}",
            hint="the site keeps serving models but no longer trains or commits",
        )


class AccountantStateError(StoreError):
    """The accountant's state file is unreadable, or was written for another plan."""
