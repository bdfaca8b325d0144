"""plan_for resolves sigma and delta; epsilon_for equals Opacus's accountants computed directly."""

from __future__ import annotations

import math

import pytest
from opacus.accountants import PRVAccountant, RDPAccountant
from opacus.accountants.utils import get_noise_multiplier

from swarmd.errors import TaskError
from swarmd.privacy.dp import UINT32_MAX, DPError, epsilon_for, milli_epsilon, plan_for
from swarmd.task import DPMechanism, PrivacySettings

# Opacus itself warns when computed directly (PRV at q = 1 takes log 0; RDP's largest order is optimal)
pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning", "ignore:Optimal order:UserWarning")

SITE = dict(rounds=5, local_steps=10, n_samples=200, batch_size=8, n_sites=4)


def _plan(secure_aggregation: bool = False, **privacy: object):  # type: ignore[no-untyped-def]
    return plan_for(PrivacySettings(**privacy), secure_aggregation=secure_aggregation, **SITE)  # type: ignore[arg-type]


def _opacus(name: str, sigma: float, q: float, steps: int, delta: float) -> float:
    acc = RDPAccountant() if name == "rdp" else PRVAccountant()
    acc.history = [(sigma, q, steps)]
    return float(acc.get_epsilon(delta=delta))


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
@pytest.mark.parametrize("mechanism", [DPMechanism.SITE, DPMechanism.SAMPLE])
def test_epsilon_equals_opacus(mechanism: DPMechanism, accountant: str) -> None:
    plan = _plan(mechanism=mechanism, noise_multiplier=1.3, delta=1e-5, accountant=accountant)
    q, per_round = (1.0, 1) if mechanism is DPMechanism.SITE else (8 / 200, 10)
    assert (plan.sample_rate, plan.steps_per_round) == (q, per_round)
    for rounds in (1, 3):
        want = _opacus(accountant, 1.3, q, rounds * per_round, 1e-5)
        assert epsilon_for(plan, rounds) == pytest.approx(want, rel=1e-9)
    assert epsilon_for(plan, 0) == 0.0


@pytest.mark.parametrize("mechanism", [DPMechanism.SITE, DPMechanism.SAMPLE])
def test_sigma_derived_from_target_epsilon(mechanism: DPMechanism) -> None:
    plan = _plan(mechanism=mechanism, target_epsilon=3.0, delta=1e-5)
    want = get_noise_multiplier(
        target_epsilon=3.0, target_delta=1e-5, sample_rate=plan.sample_rate, steps=5 * plan.steps_per_round
    )
    assert plan.noise_multiplier == want
    assert 2.9 < epsilon_for(plan, 5) <= 3.0  # Opacus's search lands within its 0.01 tolerance, below


def test_delta_default_and_site_noise_split() -> None:
    plan = _plan(mechanism=DPMechanism.SITE, noise_multiplier=2.0)
    assert plan.delta == pytest.approx(1 / 200**1.1)
    assert plan.per_site_noise == 2.0  # local DP: every site adds the whole noise
    split = _plan(secure_aggregation=True, mechanism=DPMechanism.SITE, noise_multiplier=2.0)
    assert split.per_site_noise == pytest.approx(1.0)  # 4 sites: the sum carries sigma = 2
    assert epsilon_for(split, 2) == epsilon_for(plan, 2)  # the guarantee is on the sum
    assert _plan(mechanism=DPMechanism.SAMPLE, noise_multiplier=1.0).per_site_noise == 0.0
    assert _plan() is None


@pytest.mark.parametrize(
    ("privacy", "match"),
    [
        (dict(noise_multiplier=-1.0), "noise_multiplier must be >= 0"),
        (dict(noise_multiplier=1.0, delta=1.0), "delta must be in"),
        (dict(noise_multiplier=0.3, epsilon_budget=1.0), "spent by the first round alone"),
        (dict(target_epsilon=1e-4), "cannot be reached"),
        (dict(noise_multiplier=1.0, clip=0.0), "clip must be"),
    ],
)
def test_bad_settings_are_named_errors(privacy: dict[str, object], match: str) -> None:
    with pytest.raises(DPError, match=match) as info:
        _plan(mechanism=DPMechanism.SITE, **privacy)
    assert isinstance(info.value, TaskError)


def test_bad_site_sizes() -> None:
    with pytest.raises(DPError, match="n_samples"):
        plan_for(
            PrivacySettings(mechanism=DPMechanism.SAMPLE, noise_multiplier=1.0),
            **{**SITE, "n_samples": 0},  # type: ignore[arg-type]
            secure_aggregation=False,
        )


def test_milli_epsilon_rounds_up_and_saturates() -> None:
    assert milli_epsilon(0.0) == 0
    assert milli_epsilon(1.0) == 1000
    assert milli_epsilon(1.0001) == 1001
    assert milli_epsilon(2.9994) == 3000
    assert milli_epsilon(1e12) == UINT32_MAX
    assert milli_epsilon(math.inf) == UINT32_MAX
    for bad in (-0.1, math.nan):
        with pytest.raises(DPError):
            milli_epsilon(bad)
