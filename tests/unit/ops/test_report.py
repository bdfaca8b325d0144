"""Reading a swarm's results back: label histograms from real datalists, scores from real journals."""

from __future__ import annotations

import json

import pytest

from swarmd.daemon.store import Journal
from swarmd.errors import JournalError
from swarmd.ops import LocalConsortium, LocalSite
from swarmd.ops.report import _label_histogram, plot_rounds, site_outcomes
from swarmd.train import example_task_file


def _datalist(tmp_path, labels):
    path = tmp_path / "datalist.json"
    tmp_path.mkdir(parents=True, exist_ok=True)
    items = [{"image": f"{i}.png", "label": y} for i, y in enumerate(labels)]
    path.write_text(json.dumps({"training": items}))
    return path


def test_histogram_lists_every_class_even_when_a_site_has_one(tmp_path):
    assert _label_histogram(_datalist(tmp_path, [0] * 39)) == "39/0"
    assert _label_histogram(_datalist(tmp_path, [1] * 30 + [0] * 9)) == "9/30"
    assert _label_histogram(_datalist(tmp_path, [0, 2, 2])) == "1/0/2"


def test_histogram_of_unlabelled_or_unreadable_datalists(tmp_path):
    assert _label_histogram(_datalist(tmp_path, [None, None])) == "-"
    (tmp_path / "bad.json").write_text("{not json")
    assert _label_histogram(tmp_path / "bad.json") == "?"
    assert _label_histogram(tmp_path / "missing.json") == "?"


def _site(tmp_path, name, labels, rounds):
    """A site directory in the local layout, with a datalist and a journal written by the daemon's API."""
    site_dir = tmp_path / name
    (site_dir / "state").mkdir(parents=True)
    journal = Journal.open(site_dir / "state" / "journal.json")
    journal.set_baseline({"auc": 0.5})
    for r, auc in rounds.items():
        journal.update(r, metrics={} if auc is None else {"auc": auc})
    return LocalSite(name, site_dir / "site.toml", "0x" + "00" * 20, _datalist(site_dir, labels))


def test_site_outcomes_read_each_journal(tmp_path):
    sites = (
        _site(tmp_path, "site-a", [0, 1, 1], {0: 0.6, 1: 0.8, 2: None}),
        _site(tmp_path, "site-b", [0], {}),
    )
    consortium = LocalConsortium(
        tmp_path, "http://x", "0x" + "11" * 20, example_task_file("cxr_densenet"), tmp_path / "t.json", sites
    )
    a, b = site_outcomes(consortium, local_baseline=False, workdir=tmp_path / "w")
    assert (a.name, a.initial, a.swarm, a.local_only, a.labels) == (
        "site-a",
        {"auc": 0.5},
        {"auc": 0.8},
        {},
        "1/2",
    )
    assert (b.initial, b.swarm, b.labels) == ({"auc": 0.5}, {}, "1/0")


def test_site_outcomes_name_a_site_without_a_journal(tmp_path):
    site = LocalSite("site-a", tmp_path / "a" / "site.toml", "0x" + "00" * 20, tmp_path / "d.json")
    consortium = LocalConsortium(
        tmp_path,
        "http://x",
        "0x" + "11" * 20,
        example_task_file("cxr_densenet"),
        tmp_path / "t.json",
        (site,),
    )
    with pytest.raises(JournalError, match="no journal"):
        site_outcomes(consortium, local_baseline=False, workdir=tmp_path / "w")


def test_plot_rounds_draws_every_journal(tmp_path):
    site = _site(tmp_path, "site-a", [0, 1], {0: 0.6, 1: 0.7})
    png = plot_rounds([], [], [site.journal], tmp_path / "out" / "swarm.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
