"""Per-peer budgets (swarmd/transport/budget.py): token buckets refill at their rate up to their
burst, a CPU charge can overdraw one, and a peer in debt is refused until it is paid back."""

from __future__ import annotations

from swarmd.transport.budget import Budgets, PeerBudget, Rates, TokenBucket

RATES = Rates(messages=10.0, nbytes=1000.0, cpu=0.1, burst_s=2.0)


def test_a_bucket_refills_at_its_rate_up_to_its_burst() -> None:
    b = TokenBucket(level=2.0, stamp=0.0)
    assert b.take(2, rate=1.0, burst=2.0, now=0.0)
    assert not b.take(1, rate=1.0, burst=2.0, now=0.5)  # half a token so far
    assert b.take(1, rate=1.0, burst=2.0, now=1.0)
    assert b.refill(rate=1.0, burst=2.0, now=100.0) == 2.0  # never more than the burst


def test_a_refused_take_takes_nothing() -> None:
    b = TokenBucket(level=1.0, stamp=0.0)
    assert not b.take(5, rate=1.0, burst=10.0, now=0.0)
    assert b.level == 1.0


def test_messages_over_the_burst_are_refused_then_admitted_again_as_time_passes() -> None:
    p = PeerBudget(RATES)
    now = p.messages.stamp
    admitted = sum(p.admit(1, RATES, now) for _ in range(50))
    assert admitted == 20  # 10 per second, 2 s of burst
    assert not p.admit(1, RATES, now)
    assert p.admit(1, RATES, now + 0.2)  # two more tokens by then


def test_bytes_are_budgeted_and_one_frame_larger_than_the_burst_still_fits_alone() -> None:
    p = PeerBudget(RATES)
    now = p.nbytes.stamp
    assert p.admit(1500, RATES, now)
    assert not p.admit(1000, RATES, now)
    big = PeerBudget(RATES)
    now = big.nbytes.stamp
    assert big.admit(5000, RATES, now)  # over the 2000-byte burst: it takes a full bucket
    assert not big.admit(1, RATES, now)


def test_a_decode_that_overdraws_the_cpu_bucket_blocks_the_peer_until_paid_back() -> None:
    p = PeerBudget(RATES)
    now = p.cpu.stamp
    assert p.admit(1, RATES, now)
    p.charge_cpu(1.2, RATES, now)  # 0.2 s saved, 1.2 s spent: 1 s in debt
    assert not p.admit(1, RATES, now + 5.0)  # 0.5 s paid back
    assert p.admit(1, RATES, now + 10.5)


def test_budgets_are_per_peer_and_forgotten_with_the_peer() -> None:
    budgets: Budgets[bytes] = Budgets()
    a = budgets.of(b"a", RATES)
    assert budgets.of(b"a", RATES) is a
    assert budgets.of(b"b", RATES) is not a
    budgets.forget_outside({b"b"})
    assert budgets.of(b"a", RATES) is not a
