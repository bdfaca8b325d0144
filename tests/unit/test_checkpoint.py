"""Content-addressed safetensors checkpoints: round trip, naming, and every way a file can be bad."""

from __future__ import annotations

import json
import threading

import pytest
import safetensors.torch
import torch

from swarmd import checkpoint
from swarmd.checkpoint import QUARANTINE, CheckpointStore, CorruptCheckpointError, load_file, save_file
from swarmd.codec import content_hash, hash_hex
from swarmd.errors import CheckpointError, CodecError


@pytest.fixture
def state() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        "conv.weight": torch.randn(4, 1, 3, 3, generator=g),
        "bn.running_mean": torch.randn(4, generator=g),
        "bn.num_batches_tracked": torch.tensor(7, dtype=torch.int64),
        "head.weight": torch.randn(2, 4, generator=g).half(),
    }


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(a[k].dtype == b[k].dtype and torch.equal(a[k], b[k]) for k in a)


def test_put_get_round_trip_named_by_content_hash(tmp_path, state):
    store = CheckpointStore(tmp_path / "ckpt")
    h = store.put(state)
    assert h == content_hash(state)
    assert store.path(h).name == hash_hex(h) + ".safetensors"
    assert store.has(h)
    assert _same(store.get(h), state)
    assert store.hashes() == [h]


def test_put_is_idempotent_and_leaves_no_tmp_files(tmp_path, state):
    store = CheckpointStore(tmp_path)
    assert store.put(state) == store.put({k: v.clone() for k, v in state.items()})
    assert [p.name for p in tmp_path.iterdir()] == [store.path(content_hash(state)).name]


def test_a_put_writes_while_it_hashes_and_names_the_file_by_the_hash(tmp_path, state, monkeypatch):
    """Hashing and writing meet at a barrier: the old put, which hashed before it wrote, breaks it."""
    both = threading.Barrier(2, timeout=10)
    hash_of, serialize = checkpoint.content_hash, safetensors.serialize_file

    def meeting_hash(s):  # type: ignore[no-untyped-def]
        both.wait()
        return hash_of(s)

    def meeting_write(*args, **kw):  # type: ignore[no-untyped-def]
        both.wait()
        return serialize(*args, **kw)

    monkeypatch.setattr(checkpoint, "content_hash", meeting_hash)
    monkeypatch.setattr(checkpoint.safetensors, "serialize_file", meeting_write)
    store = CheckpointStore(tmp_path)
    h = store.put(state)
    monkeypatch.undo()  # get() hashes the file again, alone
    assert h == hash_of(state) and _same(store.get(h), state)
    assert [p.name for p in tmp_path.iterdir()] == [store.path(h).name]  # no tmp or pending file left


def test_a_state_that_cannot_be_hashed_leaves_no_file(tmp_path, state, monkeypatch):
    def refuse(s):  # type: ignore[no-untyped-def]
        raise CodecError("not a tensor the codec takes")

    monkeypatch.setattr(checkpoint, "content_hash", refuse)
    with pytest.raises(CheckpointError, match="cannot checkpoint this state dict: not a tensor the codec"):
        CheckpointStore(tmp_path).put(state)
    assert list(tmp_path.iterdir()) == []


def test_non_contiguous_tensor_is_stored_by_value(tmp_path):
    t = torch.arange(12.0).reshape(3, 4).t()
    store = CheckpointStore(tmp_path)
    h = store.put({"w": t})
    assert torch.equal(store.get(h)["w"], t)


def test_truncated_file_raises_checkpoint_error(tmp_path, state):
    store = CheckpointStore(tmp_path)
    h = store.put(state)
    p = store.path(h)
    p.write_bytes(p.read_bytes()[:-10])
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        store.get(h)


def test_flipped_byte_in_tensor_data_is_a_hash_mismatch(tmp_path, state):
    store = CheckpointStore(tmp_path)
    h = store.put(state)
    p = store.path(h)
    data = bytearray(p.read_bytes())
    data[-1] ^= 0xFF
    p.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="does not match its hash"):
        store.get(h)


def test_garbage_and_pickle_files_are_refused(tmp_path):
    p = tmp_path / "model.safetensors"
    # A pickle stream must never be interpreted: safetensors sees a bogus header and refuses.
    p.write_bytes(b"\x80\x04\x95" + b"\x00" * 40)
    with pytest.raises(CheckpointError, match=str(p)):
        load_file(p)


def test_missing_checkpoint_and_bad_hash(tmp_path):
    store = CheckpointStore(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        store.get(b"\x01" * 32)
    with pytest.raises(CheckpointError, match="32 bytes"):
        store.path(b"short")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_file(tmp_path / "nope.safetensors")


def test_export_and_verify_with_expected_hash(tmp_path, state):
    out = save_file(state, tmp_path / "export" / "final.safetensors")
    assert _same(load_file(out, expected=content_hash(state)), state)
    with pytest.raises(CheckpointError, match="does not match"):
        load_file(out, expected=b"\x00" * 32)


def test_non_tensor_entry_is_refused(tmp_path):
    with pytest.raises(CheckpointError, match="not a tensor"):
        save_file({"w": [1, 2, 3]}, tmp_path / "x.safetensors")  # type: ignore[dict-item]


def test_failed_save_keeps_the_old_file_and_leaves_no_tmp(tmp_path, state):
    target = tmp_path / "model.safetensors"
    save_file(state, target)
    before = target.read_bytes()
    shared = torch.zeros(4)
    # Two names over one storage: safetensors refuses, and the refusal must not touch the old file.
    with pytest.raises(CheckpointError, match="cannot serialize"):
        save_file({"a": shared, "b": shared}, target)
    assert target.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["model.safetensors"]


def test_save_file_where_the_directory_is_a_file_is_a_checkpoint_error(tmp_path, state):
    (tmp_path / "models").write_text("not a directory")
    with pytest.raises(CheckpointError, match="cannot write"):
        save_file(state, tmp_path / "models" / "m.safetensors")
    assert (tmp_path / "models").read_text() == "not a directory"


@pytest.mark.parametrize("damage", ["flip", "truncate", "garbage"])
def test_a_bad_file_is_quarantined_once_so_the_next_look_finds_nothing(tmp_path, state, damage):
    store = CheckpointStore(tmp_path)
    h = store.put(state)
    p = store.path(h)
    data = bytearray(p.read_bytes())
    if damage == "flip":
        data[-1] ^= 0xFF
    elif damage == "truncate":
        data = data[:-10]
    else:
        data = bytearray(b"\x00" * len(data))
    p.write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="moved it aside") as err:
        store.get(h)
    assert err.value.hint == "fetch the model again from a peer"
    # moved aside, bytes kept for inspection, and no longer a checkpoint of the store
    assert not store.has(h) and h not in store.hashes()
    (moved,) = (tmp_path / QUARANTINE).iterdir()
    assert moved.name.startswith(p.name) and moved.read_bytes() == bytes(data)
    with pytest.raises(CheckpointError, match="no checkpoint") as again:
        store.get(h)
    assert not isinstance(again.value, CorruptCheckpointError)
    # the good bytes come back under the same name; quarantine is not in the way
    assert store.put(state) == h and _same(store.get(h), state)


def test_a_checkpoint_named_before_protocol_4_is_still_read_by_that_name(tmp_path, state):
    """A store written before the content hash became BLAKE3 names its files by the v1 (sha256) hash.
    After the upgrade `get`, `open` and `load_file` still verify them by it; a changed byte still fails."""
    v1 = content_hash(state, legacy=True)
    assert v1 != content_hash(state)
    save_file(state, CheckpointStore(tmp_path).path(v1))
    store = CheckpointStore(tmp_path)  # a new process: `open` must hash the file, not trust its write
    assert store.has(v1) and _same(store.get(v1), state)
    opened = store.open(v1)
    assert _same({k: opened[k] for k in opened}, state)
    assert _same(load_file(store.path(v1), v1), state)
    data = bytearray(store.path(v1).read_bytes())
    data[-1] ^= 0xFF
    store.path(v1).write_bytes(bytes(data))
    with pytest.raises(CorruptCheckpointError, match="does not match its hash"):
        store.open(v1)


def test_a_missing_file_is_not_quarantined(tmp_path, state):
    store = CheckpointStore(tmp_path)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        store.get(content_hash(state))
    assert not (tmp_path / QUARANTINE).exists()


def _parts(path) -> tuple[dict, bytes]:
    """A safetensors file's header (parsed: safetensors orders metadata keys at random) and its data."""
    raw = path.read_bytes()
    n = int.from_bytes(raw[:8], "little")
    return json.loads(raw[8 : 8 + n]), raw[8 + n :]


def test_the_file_is_what_safetensors_torch_writes(tmp_path):
    """save_file hands safetensors its specs directly (its torch layer is slow); the format is the same."""
    state = {
        "w": torch.randn(5, 3),
        "h": torch.randn(4).half(),
        "b": torch.randn(2, 2).bfloat16(),
        "d": torch.randn(3).double(),
        "n": torch.tensor(3),  # 0-dim
        "flag": torch.tensor([True, False]),
        "empty": torch.zeros(0, 4),
    }
    ours = save_file(state, tmp_path / "ours.safetensors")
    theirs = tmp_path / "theirs.safetensors"
    safetensors.torch.save_file(state, theirs, metadata={"format": "pt", "producer": "swarmd"})
    assert _parts(ours) == _parts(theirs)
    assert _same(load_file(ours), state)
