"""`swarm task check`, in-process: what it prints for a bundle that reads the site's data, the named
refusal (exit 2) of one that does not, and a named error for each bad path, never a traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from swarmd.cli.swarm import app
from swarmd.train import generate_demo_data
from swarmd.train.demodata import DemoData

EXAMPLE = Path(__file__).parents[2] / "bundles" / "zoo_style.swarm.toml"


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoData:
    out = tmp_path_factory.mktemp("task-check-data")
    return generate_demo_data(out, sites=1, task="classification", alpha=1.0, seed=5, n_per_site=12, n_test=8)


def _check(*args: str) -> tuple[int, str]:
    res = CliRunner().invoke(app, ["task", "check", *args])
    assert res.exception is None or isinstance(res.exception, SystemExit), res.exception
    assert "Traceback" not in res.output
    return res.exit_code, res.output


def test_a_bundle_that_reads_the_sites_data_passes_and_says_what_it_found(demo: DemoData) -> None:
    site = demo.sites[0]
    args = ["--task", str(EXAMPLE), "--data-list", str(site.datalist), "--eval-list", str(demo.test_datalist)]
    code, out = _check(*args, "--threads", "1")
    assert code == 0, out
    assert "bundle  zoo_style" in out
    assert "network  Classifier, 9,988 parameters" in out
    assert f"training  {site.n_train} items loaded from {site.datalist}" in out
    assert f"evaluation  8 items from {demo.test_datalist}" in out
    assert "step  1 iteration(s), loss" in out and "metric  val_auc = " in out
    assert "warning: the bundle never reads `amp`" in out and "task check passed" in out
    code, out = _check(*args, "--steps", "2", "--json")
    report = json.loads(out[out.index("{") :])
    assert code == 0 and report["n_train"] == site.n_train and report["n_val"] == 8 and report["steps"] == 2
    assert set(report["metrics"]) == {"val_auc"}


def test_the_silent_mismatch_fails_naming_the_variable(demo: DemoData, tmp_path: Path) -> None:
    unmapped = tmp_path / "swarm.toml"
    text = EXAMPLE.read_text().replace(
        'bundle = "zoo_style"', f"bundle = {json.dumps(str(EXAMPLE.parent / 'zoo_style'))}"
    )
    unmapped.write_text(text.split("[bundle.inputs]")[0] + "[swarm]\nlocal_steps = 1\n")
    code, out = _check("--task", str(unmapped), "--data-list", str(demo.sites[0].datalist))
    assert code == 2, out
    assert "BundleMismatch: bundle zoo_style does not read the data swarmd gives it" in out
    assert "train#trainer never reads `datalist`" in out
    assert (
        f"the bundle loads 2 training items, but the site's datalist {demo.sites[0].datalist} has 10" in out
    )
    assert 'datalist = "data_list_file_path"' in out


def test_bad_paths_get_named_errors(demo: DemoData, tmp_path: Path) -> None:
    site = str(demo.sites[0].datalist)
    code, out = _check("--task", str(tmp_path / "absent.toml"), "--data-list", site)
    assert code == 2 and "TaskError" in out and "absent.toml does not exist" in out
    code, out = _check("--task", str(EXAMPLE), "--data-list", str(tmp_path / "absent.json"))
    assert code == 5 and "DataError" in out and "absent.json does not exist" in out
    code, out = _check("--task", str(EXAMPLE), "--data-list", site, "--eval-list", str(tmp_path))
    assert code == 5 and "DataError" in out and "cannot read datalist" in out
    code, out = _check("--task", str(EXAMPLE), "--data-list", str(demo.test_datalist))
    assert code == 5 and "'training' is empty" in out  # the held-out list has nothing to train on
