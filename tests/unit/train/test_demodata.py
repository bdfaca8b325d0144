"""Demo data: deterministic real files, Dirichlet label skew, per-site scanner shift, the CLI."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from swarmd.cli.swarm import app
from swarmd.errors import UsageError
from swarmd.train import generate_demo_data, inspect_image, read_datalist


def _digest(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.mark.parametrize("task", ["classification", "segmentation", "signal"])
def test_same_seed_same_bytes(tmp_path, task):
    kw = {"sites": 2, "task": task, "alpha": 0.5, "seed": 11, "n_per_site": 4, "n_test": 2}
    generate_demo_data(tmp_path / "a", **kw)
    generate_demo_data(tmp_path / "b", **kw)
    other = generate_demo_data(tmp_path / "c", **{**kw, "seed": 12})
    a = _digest(tmp_path / "a")
    assert a == _digest(tmp_path / "b")
    assert a != _digest(other.root)
    assert len(a) == (2 * 4 + 2) * (2 if task == "segmentation" else 1) + 3  # images (+masks), 3 lists


def test_sites_differ_in_labels_and_intensity_and_test_is_balanced(demo_classification):
    d = demo_classification
    assert len(d.sites) == 2
    for site in d.sites:
        train = read_datalist(site.datalist, "training").items
        val = read_datalist(site.datalist, "validation").items
        assert (len(train), len(val)) == (site.n_train, site.n_val)
        labels = [e["label"] for e in train + val]
        assert tuple(labels.count(c) for c in (0, 1)) == site.class_counts
        info = inspect_image(Path(train[0]["image"]))
        assert (info.channels, info.spatial_shape) == (1, (64, 64))
    assert d.sites[0].scanner != d.sites[1].scanner
    assert d.sites[0].intensity_mean != pytest.approx(d.sites[1].intensity_mean, abs=1e-3)
    test = read_datalist(d.test_datalist, "validation").items
    assert [e["label"] for e in test].count(1) == len(test) // 2 == d.test_counts[1]
    assert json.loads(d.test_datalist.read_text())["training"] == []  # never trained on


def test_small_alpha_skews_labels_large_alpha_does_not(tmp_path):
    def max_share(alpha: float) -> float:
        d = generate_demo_data(
            tmp_path / str(alpha),
            sites=4,
            task="classification",
            alpha=alpha,
            seed=5,
            n_per_site=20,
            n_test=2,
        )
        return float(np.mean([max(s.class_counts) / sum(s.class_counts) for s in d.sites]))

    assert max_share(0.05) > 0.85  # mostly one class per site
    assert max_share(1000.0) < 0.7


def test_segmentation_masks_mark_lesions(demo_segmentation):
    item = read_datalist(demo_segmentation.sites[0].datalist, "training").items[0]
    image, mask = inspect_image(Path(item["image"])), inspect_image(Path(item["label"]))
    assert image.spatial_shape == mask.spatial_shape == (32, 32, 32)
    import nibabel as nib

    voxels = np.asarray(nib.load(item["label"]).dataobj)
    assert set(np.unique(voxels)) == {0, 1} and 0 < voxels.mean() < 0.2


@pytest.mark.parametrize(
    ("kw", "match"),
    [
        ({"task": "detection"}, "--task"),
        ({"alpha": 0.0}, "--non-iid"),
        ({"sites": 0}, "--sites"),
        ({"n_per_site": 1}, "at least 2"),
    ],
)
def test_bad_arguments(tmp_path, kw, match):
    args = {"sites": 2, "task": "classification", "alpha": 1.0, "seed": 0, "n_per_site": 4, "n_test": 2}
    with pytest.raises(UsageError, match=match):
        generate_demo_data(tmp_path, **{**args, **kw})


def test_cli_writes_sites_summary_and_preview(tmp_path):
    out = tmp_path / "demo"
    args = "demo-data --sites 2 --task classification --non-iid 0.3 --seed 1 --per-site 6 --test 4"
    result = CliRunner().invoke(app, [*args.split(), "--out", str(out), "--png-preview"])
    assert result.exit_code == 0, result.output
    assert "site-1" in result.output and "site-2" in result.output and "opacity" in result.output
    assert (out / "site-2" / "datalist.json").is_file() and (out / "test" / "datalist.json").is_file()
    assert inspect_image(out / "preview.png").channels >= 3


def test_cli_bad_task_is_a_usage_error(tmp_path):
    result = CliRunner().invoke(app, ["demo-data", "--task", "nope", "--out", str(tmp_path)])
    assert result.exit_code == 2
    assert "UsageError" in result.output
