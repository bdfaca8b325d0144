"""The DP plan of one site for one task: what noise it adds, at what sampling rate, for how many steps.

`plan_for` turns `[privacy]` settings and the site's data size into a `DPPlan`; `epsilon_for` says what
(epsilon, plan.delta) a number of rounds spends, through Opacus's accountants (RDP or PRV), never through
composition maths of our own. Both mechanisms are a sampled Gaussian mechanism to the accountant:

- site (DP-FedAvg): each round releases the site's clipped update once with noise sigma * C, so a round is
  one step at sampling rate 1 (the whole site's data is in every update);
- sample (DP-SGD): a round is `local_steps` Opacus steps, each on a Poisson sample at rate batch/n.

The neighbouring relation is one patient's images added to or removed from one site's training data.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass
from fractions import Fraction

import numpy as np

from swarmd.privacy.dp.errors import DPError
from swarmd.task import DPMechanism, PrivacySettings

UINT32_MAX = (1 << 32) - 1


@dataclass(frozen=True)
class DPPlan:
    """Resolved DP parameters of one site. Epsilon is a pure function of this and a round count."""

    mechanism: DPMechanism
    clip: float  # L2 bound C: of the whole update (site) or of each sample's gradient (sample)
    noise_multiplier: float  # sigma, resolved (derived from target_epsilon when the task gives that)
    delta: float
    sample_rate: float  # q: 1 for site DP; batch / n_samples for DP-SGD
    steps_per_round: int  # 1 for site DP; local_steps for DP-SGD
    per_site_noise: float  # sigma of the noise each site adds to its update (site DP; 0 for DP-SGD)
    accountant: str  # "rdp" or "prv"

    @property
    def accounting_key(self) -> tuple[str, float, float, float, int, str]:
        """The fields that determine epsilon (per_site_noise is how the noise is split, not how much)."""
        return (
            self.mechanism.value,
            self.noise_multiplier,
            self.delta,
            self.sample_rate,
            self.steps_per_round,
            self.accountant,
        )

    def to_json(self) -> dict[str, object]:
        return {
            "mechanism": self.mechanism.value,
            "clip": self.clip,
            "noise_multiplier": self.noise_multiplier,
            "delta": self.delta,
            "sample_rate": self.sample_rate,
            "steps_per_round": self.steps_per_round,
            "per_site_noise": self.per_site_noise,
            "accountant": self.accountant,
        }


def _opacus_accountant(name: str) -> object:
    from opacus.accountants import PRVAccountant, RDPAccountant

    return RDPAccountant() if name == "rdp" else PRVAccountant()


@functools.lru_cache(maxsize=256)
def _epsilon(key: tuple[str, float, float, float, int, str], steps: int) -> float:
    _, sigma, delta, q, _, name = key
    acc = _opacus_accountant(name)
    acc.history = [(sigma, q, steps)]  # type: ignore[attr-defined]
    # PRV at q = 1 takes log(1 - q) = log 0 on its way to the right answer; numpy warns about it
    with np.errstate(divide="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
        eps = float(acc.get_epsilon(delta=delta))  # type: ignore[attr-defined]
    if math.isnan(eps) or eps < 0.0:
        raise DPError(f"the {name} accountant gave epsilon {eps} for sigma {sigma}, q {q}, {steps} steps")
    return eps


def epsilon_for(plan: DPPlan, rounds: int) -> float:
    """Epsilon (at plan.delta) after `rounds` rounds under `plan`; 0.0 for none."""
    if rounds < 0:
        raise DPError(f"a round count cannot be negative, got {rounds}")
    if rounds == 0:
        return 0.0
    return _epsilon(plan.accounting_key, rounds * plan.steps_per_round)


def _derive_sigma(p: PrivacySettings, *, delta: float, q: float, steps: int) -> float:
    from opacus.accountants.utils import get_noise_multiplier

    try:
        with np.errstate(divide="ignore"), warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            warnings.filterwarnings("ignore", message="Optimal order is the largest alpha")
            sigma = get_noise_multiplier(
                target_epsilon=p.target_epsilon,
                target_delta=delta,
                sample_rate=q,
                steps=steps,
                accountant=p.accountant,
            )
    except ValueError as exc:  # Opacus: "The privacy budget is too low."
        raise DPError(
            f"privacy.target_epsilon {p.target_epsilon} cannot be reached in {steps} steps at delta "
            f"{delta:.3g}: {exc}",
            hint="raise target_epsilon or lower the rounds",
        ) from None
    return float(sigma)


def _positive_int(value: int, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise DPError(f"{name} must be an int >= 1, got {value!r}")


def plan_for(
    p: PrivacySettings,
    *,
    rounds: int,
    local_steps: int,
    n_samples: int,
    batch_size: int,
    n_sites: int,
    secure_aggregation: bool,
) -> DPPlan | None:
    """The DP plan of a site with `n_samples` training samples; None when the task has no DP.

    `n_sites` is the fewest sites whose noise a secure sum is sure to carry (swarm.min_peers, not the
    member count): each adds sigma/sqrt(n_sites), so a sum over at least n_sites carries at least sigma*C.
    Raises DPError when the settings cannot work (e.g. the first round alone passes the budget).
    """
    if p.mechanism is DPMechanism.NONE:
        return None
    for value, name in ((rounds, "rounds"), (local_steps, "local_steps"), (n_samples, "n_samples")):
        _positive_int(value, name)
    _positive_int(batch_size, "batch_size")
    _positive_int(n_sites, "n_sites")
    if not (p.clip > 0.0 and math.isfinite(p.clip)):
        raise DPError(f"privacy.clip must be a finite number > 0, got {p.clip}")
    if p.noise_multiplier < 0.0 or not math.isfinite(p.noise_multiplier):
        raise DPError(f"privacy.noise_multiplier must be >= 0, got {p.noise_multiplier}")
    if not 0.0 <= p.delta < 1.0:
        raise DPError(f"privacy.delta must be in [0, 1), got {p.delta}")
    if not math.isfinite(p.target_epsilon) or not math.isfinite(p.epsilon_budget):
        raise DPError("privacy.target_epsilon and privacy.epsilon_budget must be finite numbers")
    if p.noise_multiplier == 0.0 and p.target_epsilon <= 0.0:
        raise DPError("privacy: give noise_multiplier > 0 or target_epsilon > 0")
    delta = p.delta if p.delta > 0.0 else 1.0 / n_samples**1.1
    if p.mechanism is DPMechanism.SITE:
        q, steps_per_round = 1.0, 1
    else:
        q, steps_per_round = min(1.0, batch_size / n_samples), local_steps
    sigma = p.noise_multiplier or _derive_sigma(p, delta=delta, q=q, steps=rounds * steps_per_round)
    per_site = 0.0
    if p.mechanism is DPMechanism.SITE:
        per_site = sigma / math.sqrt(n_sites) if secure_aggregation else sigma
    plan = DPPlan(p.mechanism, p.clip, sigma, delta, q, steps_per_round, per_site, p.accountant)
    if p.epsilon_budget > 0.0 and (first := epsilon_for(plan, 1)) > p.epsilon_budget:
        raise DPError(
            f"privacy.epsilon_budget {p.epsilon_budget:g} is spent by the first round alone "
            f"(epsilon {first:.3f} with sigma {sigma:.3g}, q {q:.3g}, {steps_per_round} steps per round)",
            hint="raise the budget or the noise",
        )
    return plan


def milli_epsilon(eps: float) -> int:
    """Epsilon in thousandths for the chain: rounded up (never understated), saturating at uint32."""
    if math.isnan(eps) or eps < 0.0:
        raise DPError(f"epsilon must be a number >= 0, got {eps}")
    if math.isinf(eps):
        return UINT32_MAX
    return min(UINT32_MAX, math.ceil(Fraction(eps) * 1000))
