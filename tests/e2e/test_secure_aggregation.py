"""Secure aggregation with real daemons on a real chain: the leader only ever holds masked updates,
their unmasked sum is the plain FedAvg of the sites' updates, and a site killed with SIGKILL after its
masked update reached the leader is recovered from its neighbours' shares."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch

from swarmd.daemon.store import Journal, ModelStore
from swarmd.ledger import RoundStatus
from swarmd.ops import wait_until
from swarmd.privacy import SecAggParams
from swarmd.task import PrivacySettings

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]

SECURE = {"secure_aggregation": True}


def _store(site) -> ModelStore:
    return ModelStore(site.config.parent / "state" / "checkpoints")


def _records(site) -> dict:
    return Journal.read(site.journal).rounds


def _chi_square_uniform_bytes(state: dict[str, torch.Tensor]) -> float:
    """Pearson's statistic of the payload's byte values against uniform (255 degrees of freedom)."""
    raw = np.concatenate([t.numpy().view(np.uint8).ravel() for t in state.values()])
    counts = np.bincount(raw, minlength=256).astype(np.float64)
    expected = raw.size / 256
    return float(((counts - expected) ** 2 / expected).sum())


# chi2(255) has mean 255 and sd 22.6: 400 is 6.4 sd out, a false failure about once in 10^9 payloads.
# The plain float32 weights score in the millions.
CHI2_LIMIT = 400.0


def _check_round(swarm, r: int) -> None:
    """Round r's merged model is the sample-weighted mean of the committers' plain updates, to within
    the fixed-point step, and every payload the leader received looks uniform."""
    info = swarm.ledger.round(r)
    assert info.status == RoundStatus.FINALIZED and info.key_count >= 2
    sites = {s.address: s for s in swarm.consortium.sites}
    n = {c.site: c.n_samples for c in info.commits if c.site in info.included}
    plain = {a: _store(sites[a]).get(_records(sites[a])[r].plain_hash) for a in n}
    total = sum(n.values())
    leader = sites[info.leader]
    merged = _store(leader).get(info.merged_hash)
    params = SecAggParams.from_settings(PrivacySettings(secure_aggregation=True))
    step = len(n) / (params.scale * total)  # each site's rounding error is half a step, weighted by n_i
    for name, m in merged.items():
        if not m.dtype.is_floating_point:
            continue
        want = sum(plain[a][name].double() * n[a] for a in n) / total
        assert torch.allclose(m.double(), want, atol=step + 1e-6, rtol=0), name
    received = _records(leader)[r].received
    assert set(received) == set(info.included) - {info.leader}
    for sender, h in received.items():
        masked = _store(leader).get(h)
        assert all(t.dtype == torch.int32 for t in masked.values())
        assert _chi_square_uniform_bytes(masked) < CHI2_LIMIT, sender
    assert _chi_square_uniform_bytes(plain[info.leader]) > 10 * CHI2_LIMIT  # the test can see structure


def _hold_one_sender(swarm, rounds: range) -> tuple[int, object, object]:
    """Catch an elected round in which one committer has not delivered yet: SIGSTOP it (the holdout)
    and pick another non-leader committer as the victim. Returns (round, holdout, victim)."""
    for r in rounds:
        info = wait_until(
            lambda r=r: (
                swarm.ledger.current_round() >= r
                and (i := swarm.ledger.round(r)).status != RoundStatus.OPEN
                and i
            ),
            120,
            interval=0.05,
            what=f"round {r} election",
        )
        others = [s for s in swarm.consortium.sites if s.address != info.leader]
        if info.status != RoundStatus.ELECTED or len(others) != 2:
            continue
        holdout, victim = others
        swarm.daemon(holdout.address).proc.send_signal(signal.SIGSTOP)
        if _records(holdout).get(r) is None or _records(holdout)[r].delivered_term < 0:
            return r, holdout, victim
        swarm.daemon(holdout.address).proc.send_signal(signal.SIGCONT)
    raise AssertionError("never caught a sender before it delivered")


def test_the_leader_sees_only_masks_the_sum_is_fedavg_and_a_killed_site_is_recovered(
    swarm_root, swarm_factory
):
    with swarm_factory(
        swarm_root, rounds=4, block_time=1, commit_window=4, leader_timeout=10, privacy=SECURE
    ) as swarm:
        r, holdout, victim = _hold_one_sender(swarm, range(1, 3))
        wait_until(
            lambda: (rec := _records(victim).get(r)) is not None and rec.delivered_term >= 0,
            60,
            interval=0.05,
            what="the victim's masked update to reach the leader",
        )
        swarm.daemon(victim.address).proc.send_signal(signal.SIGKILL)
        swarm.daemon(victim.address).proc.wait()
        swarm.daemon(holdout.address).proc.send_signal(signal.SIGCONT)
        info = wait_until(
            lambda: (i := swarm.ledger.round(r)).status == RoundStatus.FINALIZED and i,
            90,
            what=f"round {r} to finalize without the killed site's answers",
        )
        # The dead site's input is in the sum: its self-mask came off with its neighbours' shares.
        assert victim.address in info.included and not info.recovered
        last = wait_until(
            lambda: swarm.ledger.current_round() > 3 and swarm.ledger.round(3),
            240,
            what="the last round, with the two live sites",
        )
        assert set(last.included) == {s.address for s in swarm.consortium.sites} - {victim.address}
        _check_round(swarm, 3)
