import json

import pytest
import torch

from swarmd.codec import content_hash
from swarmd.daemon.store import Journal, ModelStore
from swarmd.errors import CheckpointError, JournalError


def test_journal_survives_reopen(tmp_path):
    j = Journal.open(tmp_path / "journal.json")
    j.update(0, update_hash="0xab", n_samples=12, committed=True)
    j.update(0, delivered_term=1)
    j.set_baseline({"auc": 0.5})
    again = Journal.open(tmp_path / "journal.json")
    rec = again.get(0)
    assert (rec.update_hash, rec.n_samples, rec.committed, rec.delivered_term) == ("0xab", 12, True, 1)
    assert again.baseline == {"auc": 0.5}
    assert again.get(7).update_hash == ""  # unknown rounds read as empty records


def test_latest_merged(tmp_path):
    j = Journal.open(tmp_path / "j.json")
    assert j.latest_merged() is None
    j.update(0, merged_hash="0x01")
    j.update(2, merged_hash="0x02")
    j.update(3, update_hash="0x03")
    assert j.latest_merged().round == 2


@pytest.mark.parametrize(
    "content", ["{not json", json.dumps({"v": 99}), json.dumps({"v": 1, "rounds": {"0": {"x": 1}}})]
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
