"""`swarm model export` refuses what it cannot vouch for: a round that does not exist, one that is not
finalized, an output that already exists (against a real ledger on the session's anvil)."""

from __future__ import annotations

import pytest

from swarmd.config import load_config
from swarmd.errors import UsageError
from swarmd.ops.export import export_bundle

pytestmark = [pytest.mark.chain]


def test_a_round_that_does_not_exist_is_refused(consortium, tmp_path):
    cfg = load_config(consortium.sites[0].config)
    with pytest.raises(UsageError, match="does not exist"):
        export_bundle(cfg, 5, tmp_path / "out")
    with pytest.raises(UsageError, match="does not exist"):
        export_bundle(cfg, -1, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_an_open_round_has_no_merged_model_to_export(consortium, tmp_path):
    cfg = load_config(consortium.sites[0].config)
    with pytest.raises(UsageError, match="not finalized"):
        export_bundle(cfg, 0, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_export_warns_about_a_failed_attestation(consortium, tmp_path):
    """Round 0 is finalized with a model this site holds, then a member attests that its audit failed: the
    export still writes the bundle (the hash is the chain's) and warns on stderr. Runs last: it closes the
    module's round 0."""
    from typer.testing import CliRunner

    from swarmd.checkpoint import CheckpointStore
    from swarmd.cli.swarm import app
    from swarmd.codec import content_hash
    from swarmd.daemon.site import site_identity
    from swarmd.ledger import Ledger, Outcome
    from swarmd.ledger.receipt import election_seal
    from swarmd.task import load_task
    from swarmd.train import initial_weights

    cfgs = [load_config(s.config) for s in consortium.sites]
    sites = [Ledger(c.chain.rpc_url, c.chain.contract, site_identity(c).account) for c in cfgs]
    merged = initial_weights(load_task(cfgs[0].site.task))
    CheckpointStore(cfgs[0].site.state_dir / "checkpoints").put(merged, content_hash(merged))
    for i, s in enumerate(sites):
        s.commit(0, bytes([i + 1]) * 32, 8, seal=election_seal(bytes([9 + i]) * 32, str(s.sender), 0))
    for i, s in enumerate(sites):
        s.reveal(0, bytes([9 + i]) * 32)
    sites[0].elect(0)
    leader = next(s for s in sites if s.sender == sites[0].round(0).leader)
    leader.finalize(0, content_hash(merged), {str(s.sender): Outcome.INCLUDED for s in sites})
    sites[1].attest(0, False)
    res = CliRunner().invoke(
        app,
        [
            "model",
            "export",
            "--round",
            "0",
            "--out",
            str(tmp_path / "out"),
            "--config",
            str(consortium.sites[0].config),
        ],
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "out" / "models" / "model.safetensors").exists()
    assert "round 0 in this model's history has a failed attestation" in " ".join(res.stderr.split())
