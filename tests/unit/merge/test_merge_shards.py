"""The sharded layout: leaves cover the flat vector exactly, the Merkle root binds every leaf, and a
coordinate-wise rule merged leaf by leaf gives the leader topology's merged model bit for bit."""

from __future__ import annotations

import hashlib

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd.codec import content_hash
from swarmd.errors import MergeError
from swarmd.merge import FedAvg, Median, TrimmedMean, Update
from swarmd.merge.shards import Assembly, ShardLayout, merge_leaf, merkle_root, owners_of, reassign

ODD_SHAPES = st.lists(st.lists(st.integers(1, 7), min_size=0, max_size=3).map(tuple), min_size=1, max_size=5)
# Also tensors of no elements (a span of length 0 between two others): leaves find spans by bisection.
WITH_EMPTY = st.lists(st.lists(st.integers(0, 7), min_size=0, max_size=3).map(tuple), min_size=1, max_size=8)


def model(shapes: list[tuple[int, ...]], seed: int, with_counter: bool = True) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = {f"t{i}.w": torch.randn(shape, generator=g) for i, shape in enumerate(shapes)}
    if with_counter:  # an int64 tensor (BatchNorm's num_batches_tracked) rides along
        out["z.count"] = torch.tensor(seed % 7, dtype=torch.int64)
    return out


def sharded_merge(rule_factory, base, updates: list[Update], n_owners: int) -> dict[str, torch.Tensor]:
    layout = ShardLayout(base, leaves=max(1, n_owners * 3 - 1))  # leaves not a multiple of the owners
    merged = []
    for i in range(layout.count):
        pieces = {u.sender: (layout.leaf(u.state, i), u.n_samples) for u in updates}
        merged.append(merge_leaf(rule_factory(), layout.leaf(base, i), pieces, is_diff=False))
    return assemble(layout, base, merged)


def assemble(layout: ShardLayout, template, leaves) -> dict[str, torch.Tensor]:
    asm = Assembly(layout, template)
    asm.put_all(list(enumerate(leaves)))
    assert asm.digest() == content_hash(asm.model)
    return asm.model


def full_merge(rule, base, updates: list[Update]) -> dict[str, torch.Tensor]:
    rule.begin(base)
    for u in sorted(updates, key=lambda u: u.sender.lower()):
        rule.add(u)
    return rule.result()


@settings(max_examples=40, deadline=None)
@given(shapes=ODD_SHAPES, n=st.integers(2, 8), seed=st.integers(0, 10_000))
def test_sharded_fedavg_is_the_leader_merge_bit_for_bit(shapes, n, seed) -> None:
    base = model(shapes, seed)
    updates = [
        Update(f"0x{k:040x}", model(shapes, seed + 1 + k), 1 + (seed * (k + 3)) % 997) for k in range(n)
    ]
    whole = full_merge(FedAvg(), base, updates)
    assert content_hash(sharded_merge(FedAvg, base, updates, n)) == content_hash(whole)


@settings(max_examples=15, deadline=None)
@given(shapes=ODD_SHAPES, n=st.integers(3, 6), seed=st.integers(0, 10_000))
def test_sharded_median_and_trimmed_mean_are_the_leader_merge(shapes, n, seed) -> None:
    base = model(shapes, seed, with_counter=False)
    updates = [Update(f"0x{k:040x}", model(shapes, seed + 1 + k, False), 5) for k in range(n)]
    for factory in (Median, lambda: TrimmedMean(trim_ratio=0.2)):
        whole = full_merge(factory(), base, updates)
        assert content_hash(sharded_merge(factory, base, updates, n)) == content_hash(whole)


@settings(max_examples=40, deadline=None)
@given(shapes=ODD_SHAPES, leaves=st.integers(1, 70), seed=st.integers(0, 1000))
def test_leaves_cover_the_flat_vector_once_and_assemble_back(shapes, leaves, seed) -> None:
    state = model(shapes, seed)
    layout = ShardLayout(state, leaves=leaves)
    parts = layout.leaves(state)
    assert layout.count == min(leaves, layout.total)
    assert sum(t.numel() for leaf in parts for t in leaf.values()) == layout.total
    sizes = [sum(t.numel() for t in leaf.values()) for leaf in parts]
    assert max(sizes) - min(sizes) <= 1  # balanced to one element
    back = assemble(layout, state, parts)
    assert content_hash(back) == content_hash(state)


@settings(max_examples=40, deadline=None)
@given(shapes=WITH_EMPTY, leaves=st.integers(1, 70), seed=st.integers(0, 1000))
def test_each_leaf_holds_exactly_the_elements_in_its_bounds_tensors_without_elements_too(
    shapes, leaves, seed
) -> None:
    state = model(shapes, seed)
    layout = ShardLayout(state, leaves=leaves)
    flat = torch.cat([state[n].reshape(-1).to(torch.float64) for n in sorted(state)])
    for i in range(layout.count):
        leaf = layout.leaf(state, i)
        got = torch.cat([t.reshape(-1).to(torch.float64) for t in leaf.values()])
        assert torch.equal(got, flat[layout.bounds[i] : layout.bounds[i + 1]])
        assert all(t.numel() > 0 for t in leaf.values())
    asm = Assembly(layout, state)
    asm.put_all(list(enumerate(layout.leaves(state))))
    assert asm.digest() == content_hash(state)


@settings(max_examples=40, deadline=None)
@given(shapes=ODD_SHAPES, leaves=st.integers(1, 70), seed=st.integers(0, 1000), order=st.randoms())
def test_a_model_assembled_as_its_leaves_arrive_in_any_order_is_the_whole_models_bytes_and_hash(
    shapes, leaves, seed, order
) -> None:
    state = model(shapes, seed)
    layout = ShardLayout(state, leaves=leaves)
    arrival = list(range(layout.count))
    order.shuffle(arrival)
    asm = Assembly(layout, state)
    for k, i in enumerate(arrival):
        if k == len(arrival) - 1:
            with pytest.raises(MergeError, match="1 leaves of the model are missing"):
                asm.digest()
        asm.put(i, {name: piece.clone() for name, piece in layout.leaf(state, i).items()})
    assert asm.digest() == content_hash(state)
    assert all(torch.equal(asm.model[k], state[k]) and asm.model[k].dtype == state[k].dtype for k in state)


def test_a_leaf_that_does_not_fit_the_layout_is_refused() -> None:
    state = model([(4, 3)], 1)
    layout = ShardLayout(state, leaves=3)
    asm = Assembly(layout, state)
    with pytest.raises(MergeError, match="leaf 1 does not fit"):
        asm.put(1, layout.leaf(state, 2))  # leaf 2: the counter too, and another size
    with pytest.raises(MergeError, match="leaf 1 does not fit"):
        asm.put(1, {"other": torch.zeros(4)})
    with pytest.raises(MergeError, match="leaf 1 does not fit"):  # copied in, it would change the bytes
        asm.put(1, {k: v.double() for k, v in layout.leaf(state, 1).items()})


def test_the_root_binds_every_leaf_and_the_leaf_count() -> None:
    state = model([(5, 3), (7,), ()], 1)
    layout = ShardLayout(state, leaves=4)
    hashes = layout.hashes(state)
    root = layout.root(state)
    assert root == merkle_root(hashes)
    for i in range(len(hashes)):
        changed = list(hashes)
        changed[i] = hashlib.sha256(b"other").digest()
        assert merkle_root(changed) != root
    assert merkle_root(hashes[:3]) != merkle_root([*hashes[:3], hashes[3]])
    assert merkle_root(hashes[:2]) != merkle_root(hashes[:3])  # an odd node is not a free leaf
    state["t0.w"].view(-1)[7] += 1.0  # element 7 of 24: leaf 1 of 4
    after = layout.hashes(state)
    assert [i for i in range(4) if after[i] != hashes[i]] == [1]
    assert layout.root(state) != root
    with pytest.raises(MergeError):
        merkle_root([])


def test_owners_are_contiguous_blocks_by_address_and_reassignment_spreads_a_dead_owners_leaves() -> None:
    a, b, c = "0xBB" + "0" * 38, "0xaa" + "0" * 38, "0xCC" + "0" * 38
    owners = owners_of([a, b, c], 8)
    assert owners == (b, b, b, a, a, a, c, c)  # sorted case-insensitively: aa, BB, CC
    assert owners_of([c, b, a], 8) == owners
    moved = reassign(owners, [a.lower()])
    assert moved == (b, b, b, b, c, b, c, c)
    assert owners_of([a], 3) == (a, a, a)
    assert owners_of([a, b, c], 2) == (b, a)  # more committers than leaves: CC owns none
    with pytest.raises(MergeError):
        reassign(owners, [a, b, c])
