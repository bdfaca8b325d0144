"""The accountant: idempotent rounds, atomic persistence, reload, rebuild, budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from swarmd.privacy.dp import Accountant, AccountantStateError, BudgetSpent, DPPlan, epsilon_for, plan_for
from swarmd.task import DPMechanism, PrivacySettings


def _plan(accountant: str = "rdp", sigma: float = 1.1) -> DPPlan:
    plan = plan_for(
        PrivacySettings(
            mechanism=DPMechanism.SAMPLE, noise_multiplier=sigma, delta=1e-5, accountant=accountant
        ),
        rounds=5,
        local_steps=10,
        n_samples=100,
        batch_size=8,
        n_sites=3,
        secure_aggregation=False,
    )
    assert plan is not None
    return plan


@pytest.mark.parametrize("name", ["rdp", "prv"])
def test_record_is_idempotent_and_matches_plan(tmp_path: Path, name: str) -> None:
    acc = Accountant(_plan(name), tmp_path / "privacy.json")
    assert acc.rounds == () and acc.epsilon == 0.0
    after_one = acc.epsilon_after_next()
    assert acc.record(3) == after_one
    assert acc.record(3) == after_one  # the same round twice counts once
    assert acc.record(7) == epsilon_for(acc.plan, 2)
    assert acc.rounds == (3, 7)


def test_survives_reload_and_a_torn_tmp_file(tmp_path: Path) -> None:
    path = tmp_path / "state" / "privacy.json"
    acc = Accountant(_plan(), path)
    acc.record(1)
    acc.record(2)
    # a crash mid-write leaves a tmp file beside the account; the account itself is whole
    (path.parent / ".privacy.json.x1y2.tmp").write_bytes(b'{"v":1,"plan":{"mech')
    again = Accountant(_plan(), path)
    assert again.rounds == (1, 2)
    assert again.epsilon == acc.epsilon


def test_corrupt_or_foreign_account_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "privacy.json"
    path.write_text('{"v":1,"plan":{"mech', encoding="utf-8")
    with pytest.raises(AccountantStateError, match="corrupt"):
        Accountant(_plan(), path)
    path.unlink()
    Accountant(_plan(sigma=1.1), path).record(0)
    with pytest.raises(AccountantStateError, match="noise_multiplier"):
        Accountant(_plan(sigma=2.0), path)


def test_rebuild_from_the_chain(tmp_path: Path) -> None:
    acc = Accountant(_plan(), tmp_path / "privacy.json")
    acc.record(9)
    acc.rebuild([0, 1, 1, 2])
    assert acc.rounds == (0, 1, 2)
    assert Accountant(_plan(), tmp_path / "privacy.json").epsilon == epsilon_for(acc.plan, 3)


def test_budget(tmp_path: Path) -> None:
    acc = Accountant(_plan(), tmp_path / "privacy.json")
    budget = epsilon_for(acc.plan, 2)
    assert not acc.would_exceed(0.0)
    acc.record(0)
    assert not acc.would_exceed(budget)
    acc.check_budget(budget)
    acc.record(1)
    assert acc.would_exceed(budget)
    with pytest.raises(BudgetSpent, match="budget spent"):
        acc.check_budget(budget)
    assert not acc.would_exceed(0.0)


def test_bad_round_numbers(tmp_path: Path) -> None:
    from swarmd.privacy.dp import DPError

    acc = Accountant(_plan(), tmp_path / "privacy.json")
    for bad in (-1, True, 1.5):
        with pytest.raises(DPError):
            acc.record(bad)  # type: ignore[arg-type]


def test_kill_9_mid_write_leaves_a_whole_account(tmp_path: Path) -> None:
    """A process recording round after round is SIGKILLed; the account it leaves loads, rounds 0..k."""
    path = tmp_path / "privacy.json"
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from swarmd.privacy.dp import Accountant, DPPlan\n"
        "from swarmd.task import DPMechanism\n"
        "plan = DPPlan(DPMechanism.SITE, 1.0, 1.1, 1e-5, 1.0, 1, 1.1, 'rdp')\n"
        "acc = Accountant(plan, Path(sys.argv[1]))\n"
        "for r in range(100000):\n"
        "    acc.rebuild(range(r + 1))\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code, str(path)], env={**os.environ})
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists() and path.stat().st_size > 60:
                time.sleep(0.2)  # let it get well into rewriting the file
                break
            time.sleep(0.05)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    plan = DPPlan(DPMechanism.SITE, 1.0, 1.1, 1e-5, 1.0, 1, 1.1, "rdp")
    rounds = Accountant(plan, path).rounds
    assert len(rounds) >= 2 and rounds == tuple(range(len(rounds)))
