"""What the journal keeps of a site's personalised model (`swarm.personalise_steps`)."""

from __future__ import annotations

from swarmd.daemon.personal import Personalised
from swarmd.daemon.store import Journal


def test_the_journal_keeps_the_personalised_record(tmp_path):
    journal = Journal(tmp_path / "journal.json")
    record = Personalised("0x" + "ab" * 32, "0x" + "cd" * 32, 3, {"auc": 0.9}, {"auc": 0.8})
    journal.set_baseline({"auc": 0.5})
    assert "personalised" not in (tmp_path / "journal.json").read_text()
    journal.set_personalised(record.to_json())
    journal.update(0, n_samples=4)  # other writes keep it
    again = Journal.read(tmp_path / "journal.json")
    assert Personalised.from_json(again.personalised) == record
    assert Personalised.from_json({"hash": "0x"}) is None  # a damaged record is redone, not trusted
