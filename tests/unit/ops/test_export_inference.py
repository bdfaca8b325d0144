"""The exported bundle's documented inference, run as documented: `write_bundle` (what `swarm model export`
writes, here with freshly initialised weights) then the command line from swarmd/train/bundles/README.md on
the `test` section of `swarm demo-data`'s held-out list, and the same through `monai.bundle.run` in Python."""

from __future__ import annotations

import csv
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from swarmd.ops.export import write_bundle
from swarmd.task import load_task
from swarmd.train import BUNDLES_DIR, DemoData, example_task_file, generate_demo_data, initial_weights

pytestmark = pytest.mark.slow


def _documented_command() -> list[str]:
    text = (BUNDLES_DIR / "README.md").read_text()
    match = re.search(r"^ +(python -m monai\.bundle run .*?\\\n.*?)$", text, re.MULTILINE)
    assert match, "the bundles README no longer documents `python -m monai.bundle run`"
    return shlex.split(match.group(1).replace("\\\n", " "))


def _demo(tmp_path: Path, task: str, n: int) -> DemoData:
    return generate_demo_data(tmp_path / "data", sites=1, task=task, alpha=1, seed=0, n_per_site=n, n_test=n)


def _export(name: str, tmp_path: Path) -> Path:
    task = load_task(example_task_file(name))
    return write_bundle(task.bundle, initial_weights(task), tmp_path / f"{name}-export", "fresh weights\n")


def test_the_documented_command_line_classifies_the_demo_test_set(tmp_path: Path) -> None:
    demo = _demo(tmp_path, "classification", 4)
    bundle = _export("cxr_densenet", tmp_path)
    test_dir = str(demo.test_datalist.parent)
    args = [a.replace("/data/test", test_dir) for a in _documented_command()]
    assert args[:4] == ["python", "-m", "monai.bundle", "run"]
    res = subprocess.run([sys.executable, *args[1:]], cwd=bundle, capture_output=True, text=True, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = list(csv.reader((bundle / "eval" / "predictions.csv").open()))
    assert sorted(Path(r[0]).name for r in rows) == [f"test_{i:04d}.png" for i in range(4)]
    assert all(abs(float(r[1]) + float(r[2]) - 1) < 1e-4 for r in rows)  # softmax over the two classes


def test_the_documented_python_call_segments_the_demo_test_set(tmp_path: Path, monkeypatch) -> None:
    from monai.bundle import run

    demo = _demo(tmp_path, "segmentation", 2)
    bundle = _export("tumor_unet", tmp_path)
    monkeypatch.chdir(bundle)
    test_dir = demo.test_datalist.parent
    run(config_file="configs/inference.json", bundle_root=".", datalist=str(demo.test_datalist),
        dataset_dir=str(test_dir))  # fmt: skip
    assert sorted(p.name for p in (bundle / "eval").iterdir()) == [
        "test_0000_seg.nii.gz",
        "test_0001_seg.nii.gz",
    ]
