"""The demo's live progress table and closing summary print an undefined metric as "n/a (one class)", and the
summary is JSON with `--json`."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from rich.console import Console

from swarmd.cli.devnet_cmd import _fmt, print_summary, progress_table
from swarmd.daemon.store import Journal
from swarmd.ops import local_consortium
from swarmd.train import example_task_file


def test_progress_and_summary_print_the_reason() -> None:
    status = {
        "round": 2, "phase": "train", "leader": None, "n_samples": 5, "last_loss": 0.5,
        "last_merged_round": 1,
        "metrics": {"auc": "one class"}, "baseline": {"auc": 0.5},
    }  # fmt: skip
    buf = io.StringIO()
    Console(file=buf, width=200).print(progress_table([("site-a", status)], 3))
    assert "auc=n/a (one class) (initial 0.500)" in buf.getvalue()
    assert _fmt({"auc": "one class", "acc": 0.25}) == "auc n/a (one class), acc 0.250"


def test_progress_names_the_leader_by_site() -> None:
    a, b, c = ("0x" + ch * 40 for ch in "abc")
    base = {"round": 1, "phase": "train", "n_samples": 5, "last_loss": None, "last_merged_round": 0}
    base |= {"metrics": {}, "baseline": {}, "site": "site-a", "address": a, "peer_names": {b: "kings"}}
    rows = [(name, {**base, "leader": who}) for name, who in (("site-a", b), ("site-b", a), ("x", c))]
    buf = io.StringIO()
    Console(file=buf, width=200).print(progress_table(rows, 3))
    cells = [ln.split("│") for ln in buf.getvalue().splitlines() if ln.startswith("│")]
    leaders = {row[1].strip(): row[4].strip() for row in cells}
    assert leaders == {"site-a": "kings", "site-b": "site-a", "x": c[:10]}  # a peer; itself; unknown


@pytest.mark.chain
def test_the_summary_as_json(devnet, tmp_path, capsys) -> None:
    """`swarm devnet run --json`'s closing summary, against a real ledger: the rounds, the numbering line,
    each site's scores (an undefined one as its reason) and the plot, as JSON on stdout."""
    consortium = local_consortium(
        tmp_path, rpc_url=devnet.rpc_url, dev_keys=list(devnet.dev_keys),
        task_path=example_task_file("cxr_densenet"), sites=2, n_per_site=6, n_test=4,
    )  # fmt: skip
    for site in consortium.sites:
        journal = Journal.open(site.journal)
        journal.set_baseline({"auc": 0.5})
        journal.update(0, metrics={"auc": "one class"})
    capsys.readouterr()
    print_summary(consortium, local_baseline=False, json_out=True)
    doc = json.loads(capsys.readouterr().out)
    assert doc["numbering"] == "0 rounds finalized; no merged model yet (initial model only); round 0 open"
    assert [r["status"] for r in doc["rounds"]] == ["open"]
    assert [(s["name"], s["swarm"], s["epsilon_spent"]) for s in doc["sites"]] == [
        ("site-a", {"auc": "one class"}, "-"),
        ("site-b", {"auc": "one class"}, "-"),
    ]
    assert Path(doc["plot"]).stat().st_size > 0
    print_summary(consortium, local_baseline=False)  # the tables, as the demo prints them
    text = " ".join(capsys.readouterr().out.split())
    assert "round 0 open" in text and "auc n/a (one class)" in text and "plot:" in text
