"""Differential privacy for swarmd: the per-site plan, the accountant (Opacus RDP/PRV) and site-level noise.

DP-SGD itself runs inside local training (swarmd.train.private); this package only plans and accounts for
it. It imports no other subsystem: it takes settings, numpy arrays and paths, and returns dataclasses.
"""

from swarmd.privacy.dp.accountant import Accountant
from swarmd.privacy.dp.errors import AccountantStateError, BudgetSpent, DPError
from swarmd.privacy.dp.noise import clip_update, privatize_update
from swarmd.privacy.dp.plan import UINT32_MAX, DPPlan, epsilon_for, milli_epsilon, plan_for

__all__ = [
    "UINT32_MAX",
    "Accountant",
    "AccountantStateError",
    "BudgetSpent",
    "DPError",
    "DPPlan",
    "clip_update",
    "epsilon_for",
    "milli_epsilon",
    "plan_for",
    "privatize_update",
]
