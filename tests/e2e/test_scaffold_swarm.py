"""Three real daemons run two SCAFFOLD rounds (the task sends whole weights, so each update carries
c + its control-variate delta): the merged model holds a moved server variate under the reserved
prefix, each site keeps its client variate in its state dir, `swarm ledger audit` verifies both
rounds, and `swarm model export` writes the network without the variate."""

from __future__ import annotations

import pytest
from safetensors.torch import load_file

from swarmd.checkpoint import CheckpointStore
from swarmd.config import load_config
from swarmd.ledger import RoundStatus
from swarmd.ops.export import export_bundle
from swarmd.task import SCAFFOLD_PREFIX

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def test_a_scaffold_swarm_moves_the_server_variate_and_audits(swarm_root, swarm_factory, swarm_cli):
    with swarm_factory(
        swarm_root, sites=3, rounds=2, n_per_site=8, swarm_settings={"scaffold": True}
    ) as swarm:
        swarm.wait_done(timeout=240)
        final = [i for i in swarm.ledger.rounds() if i.status == RoundStatus.FINALIZED]
        assert len(final) == 2
        site = swarm.consortium.sites[0]
        state = site.config.parent / "state"
        merged = CheckpointStore(state / "checkpoints").get(final[-1].merged_hash)
        variate = {k: v for k, v in merged.items() if k.startswith(SCAFFOLD_PREFIX)}
        assert variate and any(bool(v.any()) for v in variate.values())
        for s in swarm.consortium.sites:
            assert (s.config.parent / "state" / "work" / "scaffold_client.safetensors").is_file()
        audited = swarm_cli("ledger", "audit", "--rounds", "all", "--config", str(site.config))
        out = audited.stdout + audited.stderr
        assert audited.returncode == 0 and out.count(": verified") == 2, out
        # the exported bundle holds the network alone: its inference config loads it strictly
        bundle = export_bundle(load_config(site.config), final[-1].round, swarm_root / "export")
        exported = load_file(bundle / "models" / "model.safetensors")
        assert set(exported) == set(merged) - set(variate)
        assert "scaffold_variate_removed" in (bundle / "SWARM_PROVENANCE.txt").read_text()
