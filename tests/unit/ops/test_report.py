"""Reading a swarm's results back: label histograms from real datalists, scores from real journals, and the
plot: leaders by site name, each site alone beside the swarm, undefined metrics marked."""

from __future__ import annotations

import json

import pytest

from swarmd.daemon.store import Journal
from swarmd.errors import JournalError
from swarmd.ledger import Member, MemberStatus, RoundInfo, RoundStatus
from swarmd.ops import LocalConsortium, LocalSite
from swarmd.ops.report import _label_histogram, draw_rounds, plot_rounds, site_outcomes
from swarmd.train import BUNDLES_DIR, example_task_file, generate_demo_data
from swarmd.train.demodata import DemoData


@pytest.fixture(scope="module")
def demo_sites(tmp_path_factory) -> DemoData:
    out = tmp_path_factory.mktemp("demo")
    return generate_demo_data(out, sites=1, task="classification", alpha=0.5, seed=3, n_per_site=8, n_test=8)


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


def _labels(ax) -> list[str]:
    return ax.get_legend_handles_labels()[1]


def test_the_plot_names_leaders_by_site_and_draws_each_site_alone(tmp_path):
    a = _site(tmp_path, "site-a", [0, 1], {0: 0.6, 1: 0.7})
    b = _site(tmp_path, "site-b", [0, 1], {0: 0.6, 1: 0.7})  # same test set, same merged model: one line
    accounts = ["0x" + "aa" * 20, "0x" + "BB" * 20]  # the chain checksums; the consortium file may not
    members = [Member(x, b"\0" * 32, "tcp://x", MemberStatus.ACTIVE) for x in accounts]
    rounds = [
        RoundInfo(r, RoundStatus.FINALIZED, 1, accounts[r], (), (), b"", None, (), 0, 1, 2, 3) for r in (0, 1)
    ]
    alone = {
        "site-a": [(-1, {"auc": 0.5}), (0, {"auc": 0.55}), (1, {"auc": 0.6})],
        "site-b": [(1, {"auc": 0.4})],
    }
    names = {"0x" + "aa" * 20: "site-a", "0x" + "bb" * 20: "site-b"}
    fig = draw_rounds(rounds, members, [a.journal, b.journal], names=names, alone=alone)
    ax_metric, ax_lead = fig.axes
    assert [t.get_text() for t in ax_lead.get_yticklabels()] == ["site-a", "site-b"]
    leader_rows = [list(c.get_offsets()[0]) for c in ax_lead.collections]
    assert leader_rows == [[0, 0], [1, 1]]  # each round on its leader's row
    assert _labels(ax_metric) == ["swarm auc (every site)", "site-a alone auc", "site-b alone auc"]


def test_the_plot_marks_an_undefined_metric_instead_of_dropping_the_site(tmp_path):
    site = _site(tmp_path, "site-a", [0, 0], {0: "one class", 1: "one class"})
    fig = draw_rounds([], [], [site.journal], alone={"site-a": [(0, {"auc": "one class"})]})
    labels = _labels(fig.axes[0])
    assert "swarm auc (site-a): n/a (one class)" in labels
    assert "site-a alone auc: n/a (one class)" in labels


def test_site_outcomes_train_each_site_alone_along_the_swarm_rounds(tmp_path, demo_sites):
    """The local-only curve of the summary's table, round by round, from the swarm's initial score."""
    task = tmp_path / "swarm.toml"
    task.write_text(
        f'[task]\nname = "t"\nbundle = "{BUNDLES_DIR / "cxr_densenet"}"\n'
        "[swarm]\nrounds = 2\nlocal_steps = 1\nmin_peers = 1\n"
    )
    site = _site(tmp_path, "site-a", [0, 1], {0: 0.6, 1: 0.7})
    site = LocalSite(site.name, site.config, site.address, demo_sites.site_datalists[0])
    consortium = LocalConsortium(
        tmp_path, "http://x", "0x" + "11" * 20, task, demo_sites.test_datalist, (site,)
    )
    (outcome,) = site_outcomes(consortium, local_baseline=True, workdir=tmp_path / "w")
    assert [r for r, _ in outcome.alone_curve] == [-1, 0, 1]
    assert outcome.alone_curve[0][1] == {"auc": 0.5} and outcome.alone_curve[-1][1] == outcome.local_only


def test_site_outcomes_carry_the_personalised_scores(tmp_path):
    site = _site(tmp_path, "site-a", [0, 1], {0: 0.7})
    record = {"hash": "0x" + "ab" * 32, "base": "0x" + "cd" * 32, "steps": 2, "metrics": {"auc": 0.9}}
    Journal.open(site.journal).set_personalised(record)
    consortium = LocalConsortium(
        tmp_path,
        "http://x",
        "0x" + "11" * 20,
        example_task_file("cxr_densenet"),
        tmp_path / "t.json",
        (site,),
    )
    (outcome,) = site_outcomes(consortium, local_baseline=False, workdir=tmp_path / "w")
    assert (outcome.swarm, outcome.personalised) == ({"auc": 0.7}, {"auc": 0.9})
