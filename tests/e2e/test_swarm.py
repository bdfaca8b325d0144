"""Three real daemons, a real anvil, real MONAI training, real ZeroMQ: the product, end to end."""

from __future__ import annotations

import json
import urllib.request

import pytest

from swarmd.codec import hash_hex
from swarmd.config import load_config
from swarmd.daemon.receipts import ReceiptBook
from swarmd.ledger import RoundStatus
from swarmd.ledger.receipt import receipt_signer
from swarmd.ops import stop_all, wait_until

pytestmark = [pytest.mark.slow, pytest.mark.multiproc, pytest.mark.chain]


def rpc_args(swarm) -> list[str]:
    return ["--rpc", swarm.devnet.rpc_url, "--contract", swarm.consortium.contract]


def assert_receipts(swarm, finalized) -> None:
    """Every included committer but the leader holds the leader's receipt for the hash it committed."""
    chain_id, contract = swarm.ledger.chain_id(), swarm.consortium.contract
    for i in finalized:
        for site in swarm.consortium.sites:
            if site.address == i.leader or site.address not in i.included:
                continue
            kept = ReceiptBook(site.journal.parent).get(i.round)
            assert kept is not None, f"{site.name} holds no receipt for round {i.round}"
            receipt, signature = kept
            assert (receipt.term, receipt.update_hash) == (i.term, i.commit_of(site.address).update_hash)
            assert receipt_signer(contract, chain_id, receipt, signature) == i.leader


def test_three_sites_train_three_rounds_and_agree_with_the_chain(swarm_root, swarm_factory, swarm_cli):
    # the demo's own network (DenseNet121, 28 MB a model); the other swarms train a small one
    with swarm_factory(swarm_root, rounds=3, bundle="cxr_densenet") as swarm:
        swarm.wait_done(timeout=300)
        infos = swarm.ledger.rounds()
        finalized = [i for i in infos if i.status == RoundStatus.FINALIZED]
        assert [i.round for i in finalized] == [0, 1, 2]
        for i in finalized:
            assert len(i.included) >= 2 and i.leader in {c.site for c in i.commits}
        assert_receipts(swarm, finalized)
        final = hash_hex(finalized[-1].merged_hash)
        for st in swarm.statuses():
            assert st["last_merged_hash"] == final and st["last_merged_round"] == 2
        # the operator's views: `swarm status` over the control socket, Prometheus over HTTP
        site = swarm.consortium.sites[0]
        status = json.loads(swarm_cli("status", "--config", str(site.config), "--json").stdout)
        assert status["phase"] == "done" and status["round"] == 3 and status["n_samples"] > 0
        cfg = load_config(site.config)
        scrape = urllib.request.urlopen(f"http://{cfg.metrics.bind}/metrics", timeout=5).read().decode()
        assert "swarmd_rounds_completed_total 3.0" in scrape, scrape[:2000]
        plot = swarm_root / "ledger.png"
        journals = [
            a
            for s in swarm.consortium.sites
            for a in ("--journal", str(s.config.parent / "state" / "journal.json"))
        ]
        drawn = swarm_cli("ledger", "plot", "--out", str(plot), *journals, *rpc_args(swarm))
        assert drawn.returncode == 0 and plot.stat().st_size > 10_000, drawn.stderr
        # every site holds the final model, and an auditor can verify it against the chain
        model = site.config.parent / "state" / "checkpoints" / f"{final}.safetensors"
        assert model.is_file()
        rpc = rpc_args(swarm)
        ok = swarm_cli("ledger", "verify", str(model), "--round", "2", *rpc)
        assert ok.returncode == 0 and "VERIFIED" in ok.stdout, ok.stdout + ok.stderr
        wrong = swarm_cli("ledger", "verify", str(model), "--round", "0", *rpc)
        assert wrong.returncode == 1 and "NOT VERIFIED" in wrong.stdout
        # ...and a member can recompute every round from the committed updates (an honest leader)
        # (and publishes it: one Attested event per round, not repeated by a second audit)
        for _ in range(2):
            audited = swarm_cli(
                "ledger", "audit", "--rounds", "all", "--attest", "--config", f"{site.config}"
            )
            assert audited.returncode == 0 and audited.stdout.count(": verified") == 3, (
                audited.stdout + audited.stderr
            )
        attested = [(a.round, a.auditor, a.ok) for a in swarm.ledger.attestations()]
        assert attested == [(r, site.address, True) for r in range(3)]
        out = swarm_root / "export"
        exp = swarm_cli("model", "export", "--round", "2", "--out", str(out), "--config", str(site.config))
        assert exp.returncode == 0, exp.stderr
        assert (out / "models" / "model.safetensors").is_file() and (out / "configs" / "train.json").is_file()


@pytest.mark.long
def test_sigterm_stops_a_training_daemon_gracefully_and_it_resumes(swarm_root, swarm_factory):
    """SIGTERM mid-round: the daemon aborts training at a safe point, exits 0, and on restart resumes
    the same swarm from its journal and the chain."""
    with swarm_factory(swarm_root, rounds=2, block_time=1) as swarm:
        victim = swarm.daemons[1]
        wait_until(
            lambda: (st := victim.status()) and st["phase"] in ("train", "commit", "elect"),
            120,
            0.1,
            what="site-b to be mid-round",
        )
        assert victim.stop(timeout=30) == 0, victim.tail()
        assert "stopping at a safe point" in victim.tail(20)
        victim.start()
        swarm.wait_done(timeout=240)
        final = swarm.ledger.round(1)
        assert {st["last_merged_hash"] for st in swarm.statuses()} == {hash_hex(final.merged_hash)}
        assert stop_all(swarm.daemons) == [0, 0, 0]
