"""`Journal.read`: another process's journal, read-only, through the same parser the daemon uses."""

from __future__ import annotations

import json

import pytest

from swarmd.daemon.store import Journal
from swarmd.errors import JournalError


@pytest.fixture
def journal_file(tmp_path):
    """A journal written by the daemon's own API: a baseline and three rounds, two of them scored."""
    j = Journal.open(tmp_path / "journal.json")
    j.set_baseline({"auc": 0.5})
    j.update(0, n_samples=16, train_seconds=1.5, metrics={"auc": 0.6}, phases={"train": 1.5})
    j.update(2, led=True, model_bytes=100, leader_rss_growth=150)
    j.update(1, metrics={"auc": 0.7})
    return j.path


def test_read_gives_the_records_in_round_order_and_the_metric_series(journal_file):
    j = Journal.read(journal_file)
    assert [rec.round for rec in j.records()] == [0, 1, 2]
    assert j.get(2).led and j.get(2).leader_rss_growth == 150
    assert j.metric_series() == {"auc": [(-1, 0.5), (0, 0.6), (1, 0.7)]}
    assert j.final_metrics() == {"auc": 0.7}  # round 2 was not evaluated: the last scored one counts


def test_read_never_writes(journal_file):
    before = journal_file.read_text()
    j = Journal.read(journal_file)
    with pytest.raises(JournalError, match="read-only"):
        j.update(3, n_samples=1)
    with pytest.raises(JournalError, match="read-only"):
        j.set_baseline({})
    assert journal_file.read_text() == before


def test_a_missing_journal_is_an_error_not_an_empty_one(tmp_path):
    with pytest.raises(JournalError, match="no journal"):
        Journal.read(tmp_path / "journal.json")
    assert not (tmp_path / "journal.json").exists()


@pytest.mark.parametrize("content", ["{not json", json.dumps({"v": 99}), json.dumps({"v": 1, "rounds": []})])
def test_a_corrupt_journal_raises_journal_error(tmp_path, content):
    path = tmp_path / "journal.json"
    path.write_text(content)
    with pytest.raises(JournalError):
        Journal.read(path)
    assert path.read_text() == content


def test_an_unscored_journal_has_no_final_metrics(tmp_path):
    j = Journal.open(tmp_path / "journal.json")
    j.update(0, n_samples=3)
    assert Journal.read(j.path).final_metrics() == {}
    assert Journal.read(j.path).metric_series() == {}
