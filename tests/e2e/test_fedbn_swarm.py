"""Three real daemons train the BatchNorm bundle with FedBN: each keeps its own BatchNorm layers in
state/local_layers.safetensors, a site killed with SIGKILL after a round resumes with exactly the file it
left, and `swarm ledger audit` verifies every round (the chain only ever holds the shared layers). With
`personalise_steps`, each site then keeps a fine-tuned whole model of its own, off the chain."""

from __future__ import annotations

import json

import pytest
import torch

from swarmd.checkpoint import CheckpointStore, load_file
from swarmd.codec import content_hash, hash_hex
from swarmd.ledger import RoundStatus
from swarmd.ops import wait_until
from swarmd.train.local_layers import LOCAL_FILE, LocalLayerStore

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def _store(site) -> LocalLayerStore:
    return LocalLayerStore(site.config.parent / "state" / LOCAL_FILE)


def _trained(site) -> int:
    loaded = _store(site).load() if _store(site).path.exists() else None
    return loaded[1] if loaded else -1


def test_fedbn_sites_keep_their_own_batchnorm_across_a_kill_and_the_audit_verifies(
    swarm_root, swarm_factory, swarm_cli
):
    fedbn = {"local_layers": "batchnorm", "personalise_steps": 1}
    with swarm_factory(
        swarm_root, rounds=3, n_per_site=8, bundle="cxr_small_bn", swarm_settings=fedbn
    ) as swarm:
        site = swarm.consortium.sites[0]
        victim = next(d for d in swarm.daemons if d.name == site.name)
        wait_until(lambda: _trained(site) >= 0, 120, what=f"{site.name} to train round 0")
        victim.kill()
        loaded = _store(site).load()
        assert loaded is not None  # the kill left a whole file: it is replaced atomically
        before, r = loaded
        before_hash = hash_hex(content_hash(before))
        victim.start()
        swarm.wait_done(timeout=240)

        # the restarted daemon composes its rounds with exactly the file it left (the log says which)
        resumed = f"local layers: resuming with {len(before)} tensors from {_store(site).path} (round {r}, "
        lines = victim.tail(1000).splitlines()
        assert any(resumed in line and before_hash in line for line in lines), victim.tail(60)

        infos = [i for i in swarm.ledger.rounds() if i.round < 3]
        assert [i.status for i in infos] == [RoundStatus.FINALIZED] * 3
        stores = {}
        for s in swarm.consortium.sites:
            loaded = _store(s).load()
            assert loaded is not None
            stores[s.name], last = loaded
            committed = [i.round for i in infos if s.address in {c.site for c in i.commits}]
            assert last == max(committed)  # every round a site trained left its local layers on disk
        var = next(k for k in before if k.endswith("running_var"))
        final = CheckpointStore(site.config.parent / "state" / "checkpoints").path(infos[-1].merged_hash)
        merged = load_file(final, infos[-1].merged_hash)
        assert merged.keys().isdisjoint(before)  # the model on chain is the shared layers alone
        values = [st[var] for st in stores.values()]
        assert not any(torch.equal(a, b) for i, a in enumerate(values) for b in values[i + 1 :])

        # personalisation: each site fine-tuned the final model (whole: shared + its local layers), off chain
        for s, st in zip(swarm.consortium.sites, swarm.statuses(), strict=True):
            journal = json.loads(s.journal.read_text())["personalised"]
            mine = load_file(s.config.parent / "state" / "personalised.safetensors")
            assert journal["hash"] == hash_hex(content_hash(mine)) == st["personalised_hash"]
            assert journal["base"] == hash_hex(infos[-1].merged_hash) and journal["steps"] == 1
            assert mine.keys() == merged.keys() | before.keys()
            assert set(journal["metrics"]) == set(journal["global_metrics"]) == {"auc"}

        config = str(site.config)
        audited = swarm_cli("ledger", "audit", "--rounds", "all", "--config", config)
        assert audited.returncode == 0, audited.stdout + audited.stderr
        assert audited.stdout.count(": verified") == 3, audited.stdout
