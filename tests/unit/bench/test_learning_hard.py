"""`swarm bench learning --task hard`: the attacks, the cyclic order, the step budgets, the arms' settings,
the hard task's sites, the report's goal judging on a made-up result, and one tiny real run of the arms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from swarmd.bench.learning import learning_report, learning_steps
from swarmd.bench.learning_arms import Attacker, compute_matched_steps, cyclic_arm, swarm_arm, visit_order
from swarmd.bench.learning_hard import ARMS, arm_task, hard_steps
from swarmd.bench.learning_poison import poison
from swarmd.errors import UsageError
from swarmd.task import WeightKind
from swarmd.train.demohard import FINDINGS, generate_hard_data, site_findings


def test_attacks_flip_scale_or_replace_the_honest_update() -> None:
    start = {"w": torch.tensor([1.0, 2.0]), "steps": torch.tensor([3])}
    trained = {"w": torch.tensor([1.5, 1.0]), "steps": torch.tensor([4])}
    flipped = poison("sign_flip", start, trained)
    assert torch.equal(flipped["w"], torch.tensor([0.5, 3.0]))  # w - (w_i - w)
    assert torch.equal(poison("scaled", start, trained)["w"], torch.tensor([6.0, -8.0]))  # w + 10 d
    a, b = poison("random", start, trained, seed=3), poison("random", start, trained, seed=3)
    assert torch.equal(a["w"], b["w"]) and not torch.equal(a["w"], poison("random", start, trained)["w"])
    # integer buffers (BatchNorm's counters) are never attacked
    assert all(torch.equal(p["steps"], torch.tensor([4])) for p in (flipped, a))
    with pytest.raises(UsageError, match="unknown attack 'nope'"):
        poison("nope", start, trained)


def test_cyclic_order_is_a_seeded_permutation_per_round() -> None:
    orders = [visit_order(0, r, 5) for r in range(4)]
    assert all(sorted(o) == [0, 1, 2, 3, 4] for o in orders)
    assert orders == [visit_order(0, r, 5) for r in range(4)]  # the same seed, the same path
    assert len({tuple(o) for o in orders}) > 1  # a new order each round
    assert visit_order(1, 0, 5) != visit_order(0, 0, 5) or visit_order(1, 1, 5) != visit_order(0, 1, 5)


def test_compute_matched_pooling_gets_every_sites_steps() -> None:
    assert compute_matched_steps(5, 8, 8) == 320
    assert compute_matched_steps(1, 3, 2) == 6


def test_each_arm_sets_its_bundle_rule_and_remedy() -> None:
    tasks = {arm: arm_task(arm, 3, 2) for arm in ARMS}
    assert all(t.swarm.rounds == 3 and t.swarm.local_steps == 2 for t in tasks.values())
    assert all(t.swarm.send == WeightKind.WEIGHTS for t in tasks.values())
    assert tasks["fedbn"].bundle.name == "cxr_small_bn" and tasks["fedbn"].swarm.local_layers == (
        "batchnorm",
    )
    assert {a for a, t in tasks.items() if t.bundle.name == "cxr_small"} == set(ARMS) - {"fedbn", "bnstats"}
    bnstats = tasks["bnstats"].swarm  # the BatchNorm bundle, one global model on merged statistics
    assert tasks["bnstats"].bundle.name == "cxr_small_bn" and bnstats.batchnorm_stats == "merged"
    assert bnstats.local_layers == () and {
        t.swarm.batchnorm_stats for a, t in tasks.items() if a != "bnstats"
    } == {"batch"}
    assert tasks["fedprox"].swarm.prox_mu > 0 and tasks["fedavg"].swarm.prox_mu == 0
    assert tasks["scaffold"].swarm.scaffold and not tasks["fedavg"].swarm.scaffold
    assert [tasks[a].swarm.merge for a in ("median", "krum", "cyclic")] == ["median", "krum", "fedavg"]
    with pytest.raises(UsageError, match="unknown arm"):
        arm_task("fedsgd", 1, 1)


def test_hard_steps_cover_alphas_seeds_then_poisoning_and_quick_is_one_small_run() -> None:
    labels = [label for label, _ in hard_steps(seeds=2, alphas=(0.1, 1.0))]
    assert labels == [
        "hard alpha=0.1 seed 0",
        "hard alpha=0.1 seed 1",
        "hard alpha=1.0 seed 0",
        "hard alpha=1.0 seed 1",
        "hard poisoned, seed 0",
        "hard poisoned, seed 1",
    ]
    quick = hard_steps(quick=True)
    assert [label for label, _ in quick] == ["hard alpha=0.1 seed 0", "hard poisoned, seed 0"]
    assert quick[0][1].keywords["rounds"] == 1 and quick[0][1].keywords["local_steps"] == 2  # type: ignore[attr-defined]
    assert [label for label, _ in learning_steps(seeds=1, task="hard", hard={"poison": False})] == [
        "hard alpha=0.1 seed 0",
        "hard alpha=1.0 seed 0",
    ]
    with pytest.raises(UsageError, match="unknown arm 'nope'"):
        hard_steps(arms=("nope",))
    with pytest.raises(UsageError, match="--alphas must be positive"):
        hard_steps(alphas=(0.0,))


def test_the_two_sites_richest_in_findings_hold_different_kinds(tmp_path: Path) -> None:
    kinds = site_findings(5, 0.1, 0)
    assert set(kinds) == set(FINDINGS)
    demo = generate_hard_data(tmp_path, sites=3, alpha=1.0, seed=0, n_per_site=5, n_test=4)
    assert demo.task == "hard" and len(demo.sites) == 3 and demo.test_counts == (2, 2)
    doc = json.loads(demo.sites[0].datalist.read_text())
    assert len(doc["training"]) == 4 and len(doc["validation"]) == 1
    assert (demo.sites[0].datalist.parent / doc["training"][0]["image"]).exists()
    again = generate_hard_data(tmp_path / "again", sites=3, alpha=1.0, seed=0, n_per_site=5, n_test=4)
    first = demo.sites[2].datalist.parent / "images/site-3_0000.png"
    assert first.read_bytes() == (again.sites[2].datalist.parent / "images/site-3_0000.png").read_bytes()


# --- the report, on a made-up result ----------------------------------------------------------------
def _arm(auc: float) -> dict[str, Any]:
    return {"metrics": {"auc": auc}, "curve": [{"round": 1, "auc": auc - 0.1}, {"round": 2, "auc": auc}]}


def _methods(alpha: float, seed: int, d: float) -> dict[str, Any]:
    return {
        "task": "hard",
        "kind": "methods",
        "alpha": alpha,
        "seed": seed,
        "rounds": 8,
        "local_steps": 8,
        "local_only": [
            {"site": f"site-{i + 1}", "metrics": {"auc": v + d}} for i, v in enumerate((0.6, 0.7))
        ],
        "pooled_step": _arm(0.8 + d),
        "pooled_compute": _arm(0.85 + d),
        "arms": {"fedavg": _arm(0.84 + d), "fedbn": _arm(0.80 + d), "krum": _arm(0.72 + d)},
    }


def _poisoned(seed: int) -> dict[str, Any]:
    return {
        "task": "hard",
        "kind": "poison",
        "alpha": 1.0,
        "seed": seed,
        "poisoned_site": "site-5",
        "clean": _arm(0.85),
        "honest": _arm(0.83),
        "poisoned": {
            "sign_flip": {"fedavg": _arm(0.5), "median": _arm(0.84), "krum": _arm(0.7)},
            "random": {"fedavg": _arm(0.5), "median": _arm(0.6), "krum": _arm(0.8)},
        },
    }


def test_hard_report_judges_every_goal_from_the_runs(tmp_path: Path) -> None:
    runs = [_methods(0.1, 0, 0.0), _methods(0.1, 1, 0.02), _poisoned(0), _poisoned(1)]
    report = learning_report(runs, tmp_path, quick=False)
    goals = {g["goal"]: g for g in report.goals}
    A = "hard alpha=0.1 (8 rounds x 8 steps)"  # the goals name the schedule they were judged on
    gap = goals[f"{A}: pooled (compute-matched) - best single site"]
    assert gap["value"] == pytest.approx(0.15) and gap["met"]
    gain = goals[f"{A}: best swarm method (fedavg) - best single site"]
    assert gain["value"] == pytest.approx(0.14) and gain["met"]
    assert goals[
        "hard alpha=0.1 (8 rounds x 8 steps): pooled (compute-matched) - best swarm method (fedavg)"
    ]["met"]
    bn = goals[f"{A}: fedavg (GroupNorm) - FedBN (BatchNorm)"]
    assert bn["value"] == pytest.approx(0.04) and not bn["met"]  # missed, and said so
    flip = goals["poisoned (sign_flip): clean fedavg - best robust rule (median)"]
    assert flip["value"] == pytest.approx(0.01) and flip["met"] and "0.350" in flip["note"]
    assert "fedavg without the attacker: -0.010 ± 0.000 above the best rule" in flip["note"]
    rand = goals["poisoned (random): clean fedavg - best robust rule (krum)"]
    assert rand["value"] == pytest.approx(0.05) and not rand["met"]
    assert len(report.goals) == 6
    assert "| pooled (compute-matched) | 0.860 ± 0.014 |" in report.tables
    assert "| fedavg without site-5 |" in report.tables
    assert "| 0.850 ± 0.000 | 0.830 ± 0.000 |" in report.tables  # clean fedavg, then without the attacker
    assert [p.name for p in report.plots] == [
        "learning_hard.png",
        "learning_hard_rounds.png",
        "learning_poison.png",
    ]
    assert json.loads((tmp_path / "learning_runs.json").read_text()) == runs


# --- one tiny real run of the arms ------------------------------------------------------------------
def test_fedbn_cyclic_and_a_poisoned_site_run_end_to_end(tmp_path: Path) -> None:
    """Two sites of six images, one round of one step: the arms' code paths with real MONAI training."""
    demo = generate_hard_data(tmp_path / "data", sites=2, alpha=1.0, seed=0, n_per_site=6, n_test=6)
    dls, test = demo.site_datalists, demo.test_datalist
    fedbn = swarm_arm(arm_task("fedbn", 1, 1), dls, test, workdir=tmp_path / "fedbn")
    assert 0.0 <= fedbn["metrics"]["auc"] <= 1.0 and [p["round"] for p in fedbn["curve"]] == [1]
    cyclic = cyclic_arm(arm_task("cyclic", 2, 1), dls, test, workdir=tmp_path / "cyclic", seed=0)
    assert cyclic["orders"] == [visit_order(0, 0, 2), visit_order(0, 1, 2)]
    bad = Attacker(site=1, attack="scaled")
    poisoned = swarm_arm(arm_task("median", 1, 1), dls, test, workdir=tmp_path / "median", attacker=bad)
    assert "auc" in poisoned["metrics"]


def test_no_alpha_runs_only_the_poisoning() -> None:
    assert [label for label, _ in hard_steps(seeds=1, alphas=())] == ["hard poisoned, seed 0"]
    with pytest.raises(UsageError, match="--alphas must be positive"):
        hard_steps(alphas=(), poison=False)


@pytest.mark.parametrize(("name", "batch_stats"), [("cxr_small", False), ("cxr_small_bn", True)])
def test_the_hard_tasks_bundles_build_one_network_for_training_and_inference(
    name: str, batch_stats: bool
) -> None:
    from monai.bundle import ConfigParser

    from swarmd.train import BUNDLES_DIR

    states = []
    for cfg in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(BUNDLES_DIR / name / "configs" / cfg)
        states.append(parser.get_parsed_content("network_def").state_dict())
    assert {k: v.shape for k, v in states[0].items()} == {k: v.shape for k, v in states[1].items()}
    assert any("running_mean" in k for k in states[0]) is batch_stats
    meta = json.loads((BUNDLES_DIR / name / "configs/metadata.json").read_text())
    assert meta["network_data_format"]["inputs"]["image"]["spatial_shape"] == [32, 32]


@pytest.mark.parametrize(
    ("args", "why"),
    [
        (["--alphas", "0.1,lots"], "--alphas must be comma-separated numbers"),
        (["--alphas", "-1"], "--alphas must be positive numbers"),
        (["--arms", "fedavg,fedsgd"], "--arms: unknown arm 'fedsgd'"),
    ],
)
def test_the_cli_refuses_bad_hard_options_by_name(args: list[str], why: str, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from swarmd.cli.swarm import app

    res = CliRunner().invoke(app, ["bench", "learning", "--task", "hard", "--out", str(tmp_path), *args])
    assert res.exit_code == 2 and "UsageError" in res.output and why in res.output, res.output
    assert "Traceback" not in res.output
