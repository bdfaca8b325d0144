import json

import pytest
import torch

from swarmd.checkpoint import CorruptCheckpointError
from swarmd.codec import Digest, content_hash
from swarmd.daemon.store import Journal, ModelStore
from swarmd.errors import CheckpointError, JournalError

H1, H2, H3 = (Digest(bytes([i]) * 32) for i in (1, 2, 3))


def test_journal_survives_reopen(tmp_path):
    j = Journal.open(tmp_path / "journal.json")
    j.update(0, update_hash=H1, n_samples=12, committed=True, received={"0xPeer": H2})
    j.update(0, delivered_term=1)
    j.set_baseline({"auc": 0.5})
    again = Journal.open(tmp_path / "journal.json")
    rec = again.get(0)
    assert (rec.update_hash, rec.n_samples, rec.committed, rec.delivered_term) == (H1, 12, True, 1)
    assert isinstance(rec.update_hash, Digest) and rec.received == {"0xPeer": H2}
    assert again.baseline == {"auc": 0.5}
    assert again.get(7).update_hash is None  # unknown rounds read as empty records


def test_journal_file_keeps_hashes_as_hex_strings(tmp_path):
    # The file format is unchanged by the Digest type: state dirs written before it still load.
    path = tmp_path / "journal.json"
    written = {
        "v": 1,
        "baseline": {},
        "rounds": {"0": {"round": 0, "base_hash": "", "update_hash": H1.hex0x(), "merged_hash": "",
                         "received": {"0xPeer": H2.hex0x()}, "n_samples": 3}},
    }  # fmt: skip
    path.write_text(json.dumps(written))
    j = Journal.open(path)
    assert (j.get(0).base_hash, j.get(0).update_hash, j.get(0).received) == (None, H1, {"0xPeer": H2})
    j.update(0, merged_hash=H3)
    doc = json.loads(path.read_text())["rounds"]["0"]
    assert (doc["base_hash"], doc["update_hash"], doc["merged_hash"]) == ("", H1.hex0x(), H3.hex0x())
    assert doc["received"] == {"0xPeer": H2.hex0x()}


def test_latest_merged(tmp_path):
    j = Journal.open(tmp_path / "j.json")
    assert j.latest_merged() is None
    j.update(0, merged_hash=H1)
    j.update(2, merged_hash=H2)
    j.update(3, update_hash=H3)
    assert j.latest_merged().round == 2


@pytest.mark.parametrize(
    "content",
    [
        "{not json",
        json.dumps({"v": 99}),
        json.dumps({"v": 1, "rounds": {"0": {"x": 1}}}),
        json.dumps({"v": 1, "rounds": {"0": {"round": 0, "update_hash": "0xab"}}}),  # not 32 bytes
    ],
)
def test_corrupt_journal_is_named_and_left_in_place(tmp_path, content):
    path = tmp_path / "journal.json"
    path.write_text(content)
    with pytest.raises(JournalError):
        Journal.open(path)
    assert path.read_text() == content  # nothing is overwritten or lost


def test_no_temp_files_left(tmp_path):
    j = Journal.open(tmp_path / "journal.json")
    for r in range(5):
        j.update(r, n_samples=r)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["journal.json"]


def _model(seed: int) -> dict[str, torch.Tensor]:
    return {"w": torch.randn(8, 4, generator=torch.Generator().manual_seed(seed)), "n": torch.tensor(seed)}


def test_model_store_serves_recent_models_from_memory_and_the_rest_from_disk(tmp_path):
    store = ModelStore(tmp_path / "ckpt", keep=2)
    a, b, c = _model(1), _model(2), _model(3)
    ha, hb, hc = store.put(a), store.put(b), store.put(c)
    assert store.get(hc)["w"] is c["w"]  # kept: no disk read, no copy
    assert store.get(hb)["w"] is b["w"]
    from_disk = store.get(ha)  # evicted (keep=2): read back and verified
    assert from_disk["w"] is not a["w"] and torch.equal(from_disk["w"], a["w"])
    assert all(store.has(h) for h in (ha, hb, hc))


def test_model_store_keep_false_writes_without_holding_the_model(tmp_path):
    store = ModelStore(tmp_path / "ckpt")
    received = _model(4)
    h = store.put(received, content_hash(received), keep=False)
    assert store.get(h, keep=False)["w"] is not received["w"]
    assert store.get(h, keep=False)["w"] is not store.get(h, keep=False)["w"]


def test_model_store_a_deleted_file_is_still_a_checkpoint_error_when_not_kept(tmp_path):
    store = ModelStore(tmp_path / "ckpt", keep=1)
    h = store.put(_model(5))
    store.put(_model(6))
    store.path(h).unlink()
    with pytest.raises(CheckpointError, match="no checkpoint"):
        store.get(h)


def test_model_store_opens_a_held_update_from_memory_and_a_received_one_verified_from_disk(tmp_path):
    """What the leader's merge folds: its own update as held, a received (not kept) one read back from
    its file and checked against its hash first."""
    store = ModelStore(tmp_path / "ckpt")
    own, received = _model(7), _model(8)
    h_own = store.put(own)
    h_received = store.put(received, content_hash(received), keep=False)
    assert store.open_update(h_own)["w"] is own["w"]  # no file read, no re-hash
    lazy = store.open_update(h_received)
    assert not isinstance(lazy, dict) and torch.equal(lazy["w"], received["w"])
    path = store.path(h_received)
    raw = bytearray(path.read_bytes())
    raw[-1] ^= 0xFF  # a flipped bit in the last tensor's data
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptCheckpointError, match="does not match its hash"):
        store.open_update(h_received)
