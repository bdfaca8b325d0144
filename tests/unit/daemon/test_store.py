import json

import pytest

from swarmd.daemon.store import Journal
from swarmd.errors import JournalError


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
