"""`swarm ledger privacy`, `rounds`, `round` and `verify` against a real anvil, on a history of three rounds:
a plain round with DP, a secure-aggregation round with a recovered dropout, and a round in which one site's
budget is spent (it no longer commits, its epsilon stays frozen). Run in-process with typer's runner."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from chainkit import Consortium, commit, deploy_consortium, elect, finalize, h32
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner

from swarmd.checkpoint import save_file
from swarmd.cli.swarm import app
from swarmd.codec import content_hash
from swarmd.ledger import Devnet
from swarmd.train import BUNDLES_DIR

pytestmark = pytest.mark.chain
OLD = {"w": torch.ones(4)}  # round 2's model, named by its v1 hash as before protocol 4


def _finalize(c: Consortium, r: int, merged: bytes, recover_one: bool = False) -> tuple[list[str], list[str]]:
    elect(c, r)
    info = c.admin.round(r)
    recovered = [s for s in info.committers if s != info.leader][:1] if recover_one else []
    included = [s for s in info.committers if s not in recovered]
    finalize(c, r, merged, included, recovered)
    return included, recovered


@pytest.fixture
def history(
    devnet: Devnet, accounts: list[LocalAccount], tmp_path: Path
) -> tuple[Consortium, Path, list[str]]:
    """Three finalized rounds; the returned model file is round 1's merged model."""
    c = deploy_consortium(devnet, accounts, secure_aggregation=True)
    model = save_file({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)}, tmp_path / "m1.safetensors")
    a, b, nodp = c.sites
    # Round 0, plain: two sites keep a DP account, the third does not (0 = no account).
    for site, eps in ((a, 1000), (b, 1100), (nodp, 0)):
        commit(site, 0, h32(f"u0-{eps}"), 10, milli_epsilon=eps)
    _finalize(c, 0, h32("m0"))
    # Round 1, secure aggregation: everyone advertises, one committer is recovered as a dropout.
    for i, site in enumerate(c.sites):
        site.advertise_keys(1, h32(f"mask{i}"), h32(f"enc{i}"))
    for site, eps in ((a, 2000), (b, 2500), (nodp, 0)):
        commit(site, 1, h32(f"u1-{eps}"), 10, milli_epsilon=eps, key_count=3)
    merged1 = content_hash({"w": torch.arange(6, dtype=torch.float32).reshape(2, 3)})
    _, recovered = _finalize(c, 1, merged1, recover_one=True)
    # Round 2: a's budget is spent, it stops committing.
    for site, eps in ((b, 3000), (nodp, 0)):
        commit(site, 2, h32(f"u2-{eps}"), 10, milli_epsilon=eps)
    c.mine(5)  # the commit window passes without a
    save_file(OLD, tmp_path / "m2.safetensors")
    _finalize(c, 2, content_hash(OLD, legacy=True))
    return c, model, recovered


def _swarm(c: Consortium, *args: str) -> str:
    # A terminal as wide as an operator's (80 columns fold the tables). Through COLUMNS, which rich reads
    # on every print: setting `console.width` would pin the shared console's width for every later test.
    res = CliRunner().invoke(
        app, [*args, "--rpc", c.devnet.rpc_url, "--contract", c.admin.address], env={"COLUMNS": "200"}
    )
    assert res.exit_code == 0, res.output
    return res.output


def test_privacy_table_json_and_plot(history, tmp_path: Path) -> None:
    c, _, _ = history
    a, b, _nodp = (s.sender for s in c.sites)
    points = json.loads(_swarm(c, "ledger", "privacy", "--json"))
    got = [(p["round"], p["site"], p["epsilon"], p["committed"]) for p in points]
    assert got == [
        (0, a, 1.0, True),
        (0, b, 1.1, True),
        (1, a, 2.0, True),
        (1, b, 2.5, True),
        (2, a, 2.0, False),  # budget spent: no commit, the epsilon stays where the chain froze it
        (2, b, 3.0, True),
    ]  # the site without DP reports nothing

    plot = tmp_path / "eps.png"
    text = _swarm(c, "ledger", "privacy", "--plot", str(plot))
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "epsilon per site per round" in text and "(2.000)" in text and "3.000" in text


def test_rounds_show_the_mode_and_the_recovered_sites(history) -> None:
    c, _, recovered = history
    rounds = json.loads(_swarm(c, "ledger", "rounds", "--json"))
    assert [r["mode"] for r in rounds] == ["plain", "secure aggregation", "plain", "plain"]
    assert [r["key_count"] for r in rounds[:3]] == [0, 3, 0]
    assert [r["recovered"] for r in rounds[:3]] == [[], recovered, []]
    assert [x["milli_epsilon"] for x in rounds[1]["commits"]] == [2000, 2500, 0]
    table = _swarm(c, "ledger", "rounds")
    assert "secure" in table and "plain" in table and recovered[0][:10] in table
    one = _swarm(c, "ledger", "round", "1")
    assert "mode: secure aggregation (3 keys)" in one and "recovered" in one and "2.500" in one
    csv_text = _swarm(c, "ledger", "export", "--format", "csv")
    header, *rows = csv_text.splitlines()
    assert header.endswith("milli_epsilon,recovered,mode")
    assert any(",2500," in row and row.endswith(",secure aggregation") for row in rows)


def test_verify_reports_the_largest_epsilon_behind_the_model(history) -> None:
    c, model, recovered = history
    a, b, nodp = (s.sender for s in c.sites)
    doc = json.loads(_swarm(c, "ledger", "verify", str(model), "--json"))
    assert doc["verified"] and doc["rounds"] == [1]
    (p,) = doc["privacy"]
    # Round 1's model holds round 0's and round 1's included updates; the dropout of round 1 is not in
    # round 1's sum, but its round-0 update is in the model's ancestry.
    spent = {a: 2.0, b: 2.5}
    if recovered[0] in spent:
        spent[recovered[0]] = {a: 1.0, b: 1.1}[recovered[0]]
    top = max(spent, key=spent.__getitem__)
    assert (p["max_epsilon"], p["site"]) == (spent[top], top)
    assert p["sites_without_dp"] == [nodp]  # included in round 0 at least
    text = _swarm(c, "ledger", "verify", str(model))
    assert "VERIFIED" in text and f"{spent[top]:.3f}" in text and "without DP" in text


def test_verify_finds_a_model_named_before_protocol_4_by_its_v1_hash(history, tmp_path: Path) -> None:
    c, _, _ = history
    doc = json.loads(_swarm(c, "ledger", "verify", str(tmp_path / "m2.safetensors"), "--json"))
    assert doc["verified"] and doc["rounds"] == [2]
    assert doc["hash"] == "0x" + content_hash(OLD, legacy=True).hex()


def test_rounds_explain_the_numbering_from_the_devnet_task(history, tmp_path: Path) -> None:
    """`swarm ledger rounds --devnet DIR` reads the task's round count from the devnet's consortium file:
    with 3 rounds, round 2's model is the final one and the open round 3 is never trained."""
    c, _, _ = history
    bundle = BUNDLES_DIR / "cxr_densenet"
    (tmp_path / "swarm.toml").write_text(f'[task]\nname = "t"\nbundle = "{bundle}"\n\n[swarm]\nrounds = 3\n')
    doc = {"root": str(tmp_path), "rpc_url": c.devnet.rpc_url, "contract": c.admin.address}
    doc |= {"task": str(tmp_path / "swarm.toml"), "test_list": str(tmp_path / "t.json"), "sites": []}
    (tmp_path / "consortium.json").write_text(json.dumps(doc))
    res = CliRunner().invoke(app, ["ledger", "rounds", "--devnet", str(tmp_path)], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert (
        "3 rounds finalized (0-2); final model: round 2; round 3 open (the task has 3 rounds, 0-2: "
        "no site trains it)" in " ".join(res.output.split())
    )
    # Without the task (--rpc/--contract), the chain alone cannot say which model is final.
    assert "latest model: round 2; round 3 open" in " ".join(_swarm(c, "ledger", "rounds").split())


def test_outcomes_and_attestations_are_shown(history) -> None:
    """Each commit's finalize outcome and the round's attestations (by site name) in `round` and `rounds`;
    `verify` reports a failed attestation in the model's history (and still verifies the hash)."""
    c, model, _ = history
    a, b, _ = c.sites
    a.attest(1, True)
    b.attest(0, False)
    one = " ".join(_swarm(c, "ledger", "round", "1").split())
    assert "outcome" in one and "included" in one and "recovered" in one and "revealed" in one
    assert f"attestations: ok: {a.sender[:12]}" in one
    doc = json.loads(_swarm(c, "ledger", "round", "0", "--json"))
    assert doc["outcomes"] == ["included"] * 3 and [x["ok"] for x in doc["attestations"]] == [False]
    rounds = _swarm(c, "ledger", "rounds")
    assert f"round 0 attestations: failed: {b.sender[:12]}" in " ".join(rounds.split())
    verdict = json.loads(_swarm(c, "ledger", "verify", str(model), "--json"))
    assert verdict["verified"] and verdict["failed_attestations"] == {"0": [b.sender]}
    assert "FAILED ATTESTATION" in _swarm(c, "ledger", "verify", str(model))
