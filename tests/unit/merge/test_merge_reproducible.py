"""Every merge rule gives the same bits for the same inputs on any order of arrival and any torch thread
count: the leader folds in address order (Exchange) and every sum and norm is thread-independent.

Each round carries one tensor above torch's parallel grain (32768 elements), so 2 and 4 threads really
split the work; results are compared by content hash, as the chain compares them.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd.codec import content_hash
from swarmd.daemon.exchange import Exchange
from swarmd.merge import Update, get_rule

RULES = [("fedavg", {}), ("median", {}), ("trimmed_mean", {"trim_ratio": 0.2}), ("geomedian", {})]
BIG = 33_000  # elements: above at::internal::GRAIN_SIZE


@contextmanager
def threads(n: int) -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _round(seed: int, n: int, diff: bool) -> tuple[dict[str, torch.Tensor], list[tuple[str, dict, int]]]:
    """A base model and n updates from committers with mixed-case addresses, values of many magnitudes."""
    g = torch.Generator().manual_seed(seed)
    base = {
        "big.weight": torch.randn(BIG, generator=g),
        "conv.weight": torch.randn(3, 4, 5, generator=g),
        "bn.num_batches_tracked": torch.tensor(10 * seed),
    }
    updates = []
    for i in range(n):
        scale = 10.0 ** float(torch.randint(-6, 3, (), generator=g))
        state = {
            "big.weight": torch.randn(BIG, generator=g) * scale + (0 if diff else base["big.weight"]),
            "conv.weight": torch.randn(3, 4, 5, generator=g) * scale + (0 if diff else base["conv.weight"]),
            "bn.num_batches_tracked": torch.tensor(int(torch.randint(0, 99, (), generator=g))),
        }
        address = "0x" + f"{(seed * 7919 + i * 104729) % 16**40:040x}"
        address = address.upper().replace("0X", "0x") if i % 2 else address
        updates.append((address, state, int(torch.randint(1, 5000, (), generator=g))))
    return base, updates


def _merged_hash(rule: str, params: dict, base, updates, order: list[int], diff: bool) -> bytes:
    """What the leader finalizes: offers in `order` of arrival, folds from its store, hashes."""
    store = {content_hash(s): s for _, s, _ in updates}
    ex = Exchange(
        round=0,
        term=1,
        expected={a: (content_hash(s), n) for a, s, n in updates},
        base=base,
        rule=get_rule(rule, **params),
        is_diff=diff,
    )
    for i in order:
        address, state, _ = updates[i]
        ex.offer(address, state, content_hash(state))
    ex.fold(store.__getitem__)
    merged, included = ex.result()
    assert len(included) == len(updates)
    return content_hash(merged)


@pytest.mark.parametrize("rule", RULES, ids=[r for r, _ in RULES])
@settings(max_examples=4, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(2, 6),
    diff=st.booleans(),
    data=st.data(),
)
def test_every_rule_is_the_same_on_any_arrival_order_and_thread_count(rule, seed, n, diff, data):
    base, updates = _round(seed, n, diff)
    orders = [data.draw(st.permutations(range(n))) for _ in range(3)]
    hashes = set()
    for order, count in zip(orders, (1, 2, 4), strict=True):
        with threads(count):
            hashes.add(_merged_hash(*rule, base, updates, list(order), diff))
    assert len(hashes) == 1


@settings(max_examples=6, deadline=None)
@given(seed=st.integers(0, 2**16), data=st.data())
def test_buffered_rules_ignore_the_order_they_are_given_updates_in(seed, data):
    """A robust rule holds all its updates and puts them in address order itself, whoever calls it."""
    _, updates = _round(seed, 5, diff=True)
    for name, params in RULES[1:]:
        hashes = set()
        for count in (1, 4):
            order = data.draw(st.permutations(range(len(updates))))
            rule = get_rule(name, **params)
            rule.begin(updates[0][1])
            with threads(count):
                for i in order:
                    address, state, n = updates[i]
                    rule.add(Update(address, state, n))
                hashes.add(content_hash(rule.result()))
        assert len(hashes) == 1, name


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**16),
    n=st.integers(5, 7),
    f=st.integers(0, 1),
    m=st.integers(1, 3),
    diff=st.booleans(),
    data=st.data(),
)
def test_krum_selects_and_merges_the_same_on_any_arrival_order_and_thread_count(seed, n, f, m, diff, data):
    """Krum's pairwise distances are order-free sums and its ties go to the lower address: the same
    selection and the same bits whatever the order of arrival and the thread count."""
    base, updates = _round(seed, n, diff)
    outcomes = set()
    for count in (1, 2, 4):
        order = list(data.draw(st.permutations(range(n))))
        with threads(count):
            ex = Exchange(
                round=0,
                term=1,
                expected={a: (content_hash(s), k) for a, s, k in updates},
                base=base,
                rule=get_rule("krum", f=f, m=m),
                is_diff=diff,
            )
            for i in order:
                address, state, _ = updates[i]
                ex.offer(address, state, content_hash(state))
            ex.fold({content_hash(s): s for _, s, _ in updates}.__getitem__)
            merged, included = ex.result()
        assert len(included) == m and len(ex.excluded) == n - m
        outcomes.add((content_hash(merged), tuple(included)))
    assert len(outcomes) == 1
