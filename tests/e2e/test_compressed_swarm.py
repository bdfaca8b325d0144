"""Three real daemons on a real anvil exchange top-k compressed updates (`[exchange] compression =
"topk"`, send = "diff"): the rounds finalize with every site included, each committed update is the
compressed codec message (its encoding declared, a few percent of the model's bytes), each site's
error-feedback residual sits in its state dir (0600, bound to the task), and `swarm ledger audit`
decodes the stored updates as the leader did and verifies every round."""

from __future__ import annotations

import stat

import pytest

from swarmd.checkpoint import CheckpointStore
from swarmd.compress import ENCODING_KEY, wire_bytes
from swarmd.ledger import RoundStatus

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def test_a_topk_swarm_finalizes_and_its_rounds_audit(swarm_root, swarm_factory, swarm_cli):
    exchange = {"compression": "topk", "topk_ratio": 0.05}
    with swarm_factory(
        swarm_root, rounds=2, n_per_site=8, swarm_settings={"send": "diff"}, exchange=exchange
    ) as swarm:
        swarm.wait_done(timeout=240)
        infos = [i for i in swarm.ledger.rounds() if i.status == RoundStatus.FINALIZED]
        assert [i.round for i in infos] == [0, 1] and all(len(i.included) == 3 for i in infos)
        site = swarm.consortium.sites[0]
        state = site.config.parent / "state"
        mine = next(c for c in infos[1].commits if c.site == site.address)
        store = CheckpointStore(state / "checkpoints")
        sent, model = store.get(mine.update_hash), store.get(infos[1].merged_hash)
        assert bytes(sent[ENCODING_KEY].tolist()) == b"topk;ratio=0.05"
        assert wire_bytes(sent) < 0.15 * wire_bytes(model)  # values and int32 indices of 5 %, plus counters
        residuals = sorted((state / "residual").glob("round-*.safetensors"))
        assert [p.name for p in residuals] == ["round-0.safetensors", "round-1.safetensors"]
        assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in residuals)
        audited = swarm_cli("ledger", "audit", "--rounds", "all", "--config", str(site.config))
        out = audited.stdout + audited.stderr
        assert audited.returncode == 0 and out.count(": verified") == 2, out
