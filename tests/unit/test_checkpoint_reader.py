"""A stored checkpoint read one tensor at a time: the same tensors as a full load, verified before any is
handed out, and a bad file set aside like a full load's."""

from __future__ import annotations

import gc
import os

import pytest
import torch

from swarmd.checkpoint import CheckpointStore, CorruptCheckpointError
from swarmd.codec import ContentHasher, content_hash
from swarmd.daemon.exchange import Exchange
from swarmd.merge import get_rule


def _state(v: float) -> dict[str, torch.Tensor]:
    return {
        "w": torch.arange(12, dtype=torch.float32).reshape(3, 4) * v,
        "h": torch.full((5,), v, dtype=torch.bfloat16),
        "n": torch.tensor(7),
        "flag": torch.tensor([True, False]),
        "empty": torch.zeros(0),
    }


def test_tensors_are_read_on_access_and_equal_a_full_load(tmp_path):
    store = CheckpointStore(tmp_path)
    h = store.put(_state(2.0))
    lazy = store.open(h)
    full = store.get(h)
    assert sorted(lazy) == sorted(full) and len(lazy) == 5
    for name, t in full.items():
        assert torch.equal(lazy[name], t) and lazy[name].dtype == t.dtype
        assert lazy.meta()[name].shape == t.shape and lazy.meta()[name].device.type == "meta"
    assert lazy[name] is not lazy[name]  # nothing is kept
    assert content_hash(dict(lazy)) == h


def test_a_file_that_does_not_hash_to_its_name_is_set_aside(tmp_path):
    store = CheckpointStore(tmp_path)
    h = store.put(_state(1.0))
    path = store.path(h)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="does not match its hash"):
        store.open(h)
    assert not store.has(h) and (tmp_path / "quarantine").is_dir()


def test_a_truncated_or_foreign_file_is_refused(tmp_path):
    store = CheckpointStore(tmp_path)
    h = store.put(_state(1.0))
    store.path(h).write_bytes(store.path(h).read_bytes()[:40])
    with pytest.raises(CorruptCheckpointError):
        store.open(h)
    h2 = store.put(_state(3.0))
    store.path(h2).write_bytes(b"\xff" * 8 + b"{}")
    with pytest.raises(CorruptCheckpointError, match="header"):
        store.open(h2)


def test_the_leader_merges_stored_updates_to_the_same_bits_as_in_memory_ones(tmp_path):
    store = CheckpointStore(tmp_path)
    a = {"w": torch.randn(100), "b": torch.randn(3)}
    b = {"w": torch.randn(100), "b": torch.randn(3)}
    hashes = []
    for load in (store.open, {content_hash(a): a, content_hash(b): b}.__getitem__):
        ex = Exchange(
            round=0,
            term=1,
            expected={"0xB": (store.put(b), 3), "0xa": (store.put(a), 2)},
            base={k: torch.zeros_like(v) for k, v in a.items()},
            rule=get_rule("fedavg"),
            is_diff=False,
        )
        ex.offer("0xB", b, content_hash(b))
        ex.offer("0xa", a, content_hash(a))
        ex.fold(load)
        hashes.append(content_hash(ex.result()[0]))
    assert hashes[0] == hashes[1]


def test_read_flat_reads_one_slice_of_one_tensor(tmp_path):
    """What the robust rules read: elements [start, stop) of a tensor, flattened, in its dtype."""
    state = {"w": torch.arange(24, dtype=torch.float32).reshape(4, 6), "b": torch.tensor([True, False, True])}
    store = CheckpointStore(tmp_path)
    opened = store.open(store.put(state))
    assert torch.equal(opened.read_flat("w", 5, 13), torch.arange(5, 13, dtype=torch.float32))
    assert torch.equal(opened.read_flat("b", 1, 3), torch.tensor([False, True]))
    assert opened.read_flat("w", 24, 24).numel() == 0
    with pytest.raises(IndexError):
        opened.read_flat("w", 20, 25)


def test_reads_keep_to_the_file_they_began_on_and_its_descriptor_goes_with_the_state(tmp_path):
    """The file is opened once, at the first read, and read by offset: a file put in its place after that
    is not read, and the descriptor is closed when the state is dropped."""
    store = CheckpointStore(tmp_path)
    h = store.put(_state(2.0))
    fds = set(os.listdir("/proc/self/fd"))
    lazy = store.open(h)
    first = lazy["w"]
    other = tmp_path / "other.safetensors"
    other.write_bytes(store.path(store.put(_state(5.0))).read_bytes())
    os.replace(other, store.path(h))  # another model's bytes under this name
    assert torch.equal(first, _state(2.0)["w"]) and torch.equal(lazy["h"], _state(2.0)["h"])
    assert torch.equal(lazy.read_flat("w", 2, 6), _state(2.0)["w"].reshape(-1)[2:6])
    assert len(set(os.listdir("/proc/self/fd")) - fds) == 1
    del lazy
    gc.collect()
    assert set(os.listdir("/proc/self/fd")) - fds == set()


def _hashed_bytes(monkeypatch) -> list[int]:
    """Counts the bytes `open` hashes from here on."""
    counted: list[int] = []
    real = ContentHasher.update

    def update(self, chunk):
        counted.append(len(chunk))
        return real(self, chunk)

    monkeypatch.setattr(ContentHasher, "update", update)
    return counted


def test_a_file_the_store_wrote_is_opened_without_hashing_it_again(tmp_path, monkeypatch):
    """The leader opens each update it stored seconds before for its merge: the store wrote that file from
    a state whose hash it knew, so only the header is read. Another store on the same directory (a
    restarted daemon) did not write it, and hashes it."""
    store = CheckpointStore(tmp_path)
    h = store.put(_state(2.0))
    hashed = _hashed_bytes(monkeypatch)
    lazy = store.open(h)
    assert hashed == [] and content_hash(dict(lazy)) == h
    CheckpointStore(tmp_path).open(h)
    assert sum(hashed) > 0


def test_a_file_replaced_or_rewritten_since_the_store_wrote_it_is_hashed_and_set_aside(tmp_path, monkeypatch):
    store = CheckpointStore(tmp_path)
    h = store.put(_state(1.0))
    other = tmp_path / "other.safetensors"
    other.write_bytes(store.path(store.put(_state(4.0))).read_bytes())
    os.replace(other, store.path(h))  # another model's bytes under this name: a new file
    hashed = _hashed_bytes(monkeypatch)
    with pytest.raises(CorruptCheckpointError, match="does not match its hash"):
        store.open(h)
    assert sum(hashed) > 0 and not store.has(h)
    h = store.put(_state(1.0))  # written again after it was set aside: trusted again
    with store.path(h).open("r+b") as f:  # one byte changed in place
        f.seek(-1, os.SEEK_END)
        f.write(b"\x01")
    with pytest.raises(CorruptCheckpointError, match="does not match its hash"):
        store.open(h)
