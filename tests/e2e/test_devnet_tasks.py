"""`swarm devnet run` beyond the demo: the shipped 3D segmentation task on generated NIfTI volumes,
and a task file of one's own (the 1-D, one-output BCE example) on datalists of one's own (`--data
SITE=DATALIST`, `--test-data`): the sites are the lists given, each site's config names its list, and
every commit on chain carries the size of its site's list."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from swarmd.config import load_config
from swarmd.daemon.store import Journal
from swarmd.ledger import Devnet, Ledger, RoundStatus
from swarmd.ops import LocalConsortium
from swarmd.task import load_task
from swarmd.train import BUNDLES_DIR, generate_demo_data

pytestmark = [pytest.mark.chain, pytest.mark.slow, pytest.mark.multiproc]


def swarm(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    res = subprocess.run(
        [sys.executable, "-m", "swarmd.cli.swarm", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "1"},
    )
    assert res.returncode == 0, f"swarm {' '.join(args)} failed:\n{res.stdout}\n{res.stderr}"
    assert "Traceback" not in res.stderr
    return res


@pytest.mark.long
def test_segmentation_example_runs_on_a_devnet(swarm_root):
    """`--task segmentation`: the shipped 3D UNet on generated volumes, 2 sites, 2 rounds of 2 steps."""
    root = swarm_root / "seg"
    run = swarm(
        "devnet", "run", "--dir", str(root), "--task", "segmentation", "--sites", "2",
        "--rounds", "2", "--local-steps", "2", "--n-per-site", "4", "--n-test", "2",
        "--block-time", "0", "--no-local-baseline", "--keep", "--timeout", "180",
    )  # fmt: skip
    try:
        consortium = LocalConsortium.load(root)
        assert consortium.task == root / "task" / "swarm.toml"  # the example, with 2 rounds of 2 steps
        assert load_task(consortium.task).bundle == BUNDLES_DIR / "tumor_unet"
        images = sorted((root / "data" / "site-1" / "images").iterdir())
        assert len(images) == 4 and all(p.name.endswith(".nii.gz") for p in images)
        ledger = Ledger(Devnet.load(root / "devnet.json").rpc_url, consortium.contract)
        assert [ledger.round(r).status for r in (0, 1)] == [RoundStatus.FINALIZED] * 2
        assert "dice" in run.stdout
    finally:
        swarm("devnet", "down", "--dir", str(root))


def _own_datalist(demo_list: Path, out: Path, keep: int) -> Path:
    """The first `keep` training entries of a generated list, with absolute paths, in another folder."""
    doc = json.loads(demo_list.read_text())
    absolute = [{**e, "image": str(demo_list.parent / e["image"])} for e in doc["training"][:keep]]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"training": absolute}))
    return out


def test_a_1d_bce_task_of_ones_own_on_datalists_of_ones_own(tmp_path, swarm_root):
    """The 1-D `ecg_densenet` example (.npy records, one output, BCEWithLogitsLoss, ROC AUC) as one's own
    task on three lists of one's own: the sites are the lists given, every commit carries its list's
    size, and every site reports the merged model's AUC on the shared test list each round."""
    demo = generate_demo_data(
        tmp_path / "gen", sites=3, task="signal", alpha=1.0, seed=4, n_per_site=10, n_test=16
    )
    sizes = {"st-marys": 7, "kings": 5, "guys": 6}
    lists = {
        site: _own_datalist(demo.site_datalists[i], tmp_path / "mine" / f"{site}.json", n)
        for i, (site, n) in enumerate(sizes.items())
    }
    task = tmp_path / "swarm.toml"
    task.write_text(
        f'[task]\nname = "own-ecg"\nbundle = "{BUNDLES_DIR / "ecg_densenet"}"\nseed = 5\n\n'
        "[swarm]\nrounds = 2\nlocal_steps = 5\nmin_peers = 2\n"
    )
    root = swarm_root / "dn"  # unix socket paths stay short
    data = [a for site, path in lists.items() for a in ("--data", f"{site}={path}")]
    swarm(
        "devnet", "run", "--dir", str(root), "--task", str(task), *data,
        "--test-data", str(demo.test_datalist),
        "--block-time", "0", "--no-local-baseline", "--keep", "--timeout", "180",
    )  # fmt: skip
    try:
        consortium = LocalConsortium.load(root)
        assert [s.name for s in consortium.sites] == list(sizes)
        assert not (root / "data").exists()  # nothing generated
        for site in consortium.sites:
            cfg = load_config(site.config)
            assert cfg.site.name == site.name and cfg.site.data_list == lists[site.name]
            assert cfg.site.eval_list == demo.test_datalist.resolve()
            journal = Journal.read(site.config.parent / "state" / "journal.json")
            aucs = [value for _, value in journal.metric_series()["auc"]]
            assert len(aucs) == 3, (site.name, aucs)  # the initial model, then rounds 0 and 1
            assert all(isinstance(v, float) and 0.0 <= v <= 1.0 for v in aucs), (site.name, aucs)
        ledger = Ledger(Devnet.load(root / "devnet.json").rpc_url, consortium.contract)
        samples = {s.address: sizes[s.name] for s in consortium.sites}
        for r in (0, 1):
            info = ledger.round(r)
            assert info.status == RoundStatus.FINALIZED
            assert {c.site: c.n_samples for c in info.commits} == samples
    finally:
        swarm("devnet", "down", "--dir", str(root))
