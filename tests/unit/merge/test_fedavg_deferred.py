"""FedAvg's two ways of folding: an update in memory at once, an update that reads on access (the leader's:
stored on disk or held by its store) at the merge, one tensor at a time across all updates. Both give the
same bits in every mix, and the deferred way reads one tensor of each update at a time."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import torch

from swarmd.checkpoint_reader import HeldState
from swarmd.codec import content_hash
from swarmd.daemon.store import ModelStore
from swarmd.merge import FedAvg, Update
from swarmd.merge.scaffold import Scaffold
from swarmd.task import SCAFFOLD_PREFIX

NAMES = ("a.weight", "b.bias", "order", "steps", "mask", SCAFFOLD_PREFIX + "a.weight")
# A coordinate whose float64 sum depends on the order of the adds: (2^60 + 1) - 2^60 = 0, but
# (2^60 - 2^60) + 1 = 1.
ORDER = (2.0**60, 1.0, -(2.0**60), 0.0, 0.0)


def _updates(n: int, seed: int = 0) -> list[tuple[str, dict[str, torch.Tensor], int]]:
    """n updates of one sample each (so `ORDER` is added as it is), values of many magnitudes."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for i in range(n):
        scale = 10.0 ** (8 * (i % 2) - 6 * (i % 3 == 2))
        state = {
            "a.weight": torch.randn(40, 7, generator=g) * scale,
            "b.bias": torch.randn(13, generator=g),
            "order": torch.tensor([ORDER[i]]),
            "steps": torch.tensor(int(torch.randint(0, 1000, (), generator=g))),
            "mask": torch.rand(9, generator=g) > 0.5,
            SCAFFOLD_PREFIX + "a.weight": torch.randn(40, 7, generator=g),
        }
        out.append((f"0x{i:040x}", state, 1))
    return out


def _merge(rule, updates, wrap) -> bytes:
    rule.begin(updates[0][1])
    for i, (sender, state, n) in enumerate(updates):
        rule.add(Update(sender, wrap(i, state), n))
    return content_hash(rule.result())


def _eager(i, state):
    return dict(state)


def _held(i, state):
    return HeldState(state)


@pytest.mark.parametrize("cls", [FedAvg, Scaffold])
def test_every_mix_of_kept_and_folded_updates_gives_the_same_bits(cls):
    updates = _updates(5)
    want = _merge(cls(), updates, _eager)
    assert _merge(cls(), updates, _held) == want
    for kinds in itertools.product((_eager, _held), repeat=len(updates)):
        mixed = _merge(cls(), updates, lambda i, s, kinds=kinds: kinds[i](i, s))
        assert mixed == want, [k.__name__ for k in kinds]


def test_stored_updates_read_from_disk_give_the_same_bits(tmp_path: Path):
    updates = _updates(4, seed=3)
    store = ModelStore(tmp_path / "checkpoints")
    hashes = [store.put(s, content_hash(s), keep=False) for _, s, _ in updates]
    want = _merge(FedAvg(), updates, _eager)
    assert _merge(FedAvg(), updates, lambda i, s: store.open_update(hashes[i])) == want


class _Recording(HeldState):
    """A held model that logs every tensor read (sender, name)."""

    def __init__(self, sender: str, state: dict[str, torch.Tensor], log: list[tuple[str, str]]) -> None:
        super().__init__(state)
        self.sender, self.log = sender, log

    def __getitem__(self, name: str) -> torch.Tensor:
        self.log.append((self.sender, name))
        return super().__getitem__(name)


def test_kept_updates_are_read_at_the_merge_one_tensor_of_each_at_a_time():
    updates = _updates(3)
    log: list[tuple[str, str]] = []
    rule = FedAvg()
    rule.begin(updates[0][1])
    for sender, state, n in updates:
        rule.add(Update(sender, _Recording(sender, state, log), n))
    log.clear()  # what add()'s structure check read
    rule.result()
    senders = [s for s, _, _ in updates]
    assert log == [(s, name) for name in NAMES for s in senders]


def test_an_update_in_memory_after_kept_ones_folds_them_first_in_order():
    updates = _updates(3)
    log: list[tuple[str, str]] = []
    rule = FedAvg()
    rule.begin(updates[0][1])
    for sender, state, n in updates[:2]:
        rule.add(Update(sender, _Recording(sender, state, log), n))
    log.clear()
    sender, state, n = updates[2]
    rule.add(Update(sender, state, n))
    assert [s for s, _ in log] == [updates[0][0]] * len(NAMES) + [updates[1][0]] * len(NAMES)
    assert content_hash(rule.result()) == _merge(FedAvg(), updates, _eager)
