"""The example bundles and task files that ship with swarmd load as tasks and as MONAI bundles."""

from __future__ import annotations

import json

import pytest

from swarmd.task import load_task
from swarmd.train import BUNDLES_DIR, example_task_file


@pytest.mark.parametrize(("name", "spatial"), [("cxr_densenet", 2), ("tumor_unet", 3)])
def test_example_task_file_loads_and_hashes_stably(name, spatial):
    task = load_task(example_task_file(name))
    assert task.bundle == (BUNDLES_DIR / name).resolve()
    assert task.hash == load_task(example_task_file(name)).hash
    meta = json.loads((task.bundle / "configs/metadata.json").read_text())
    assert len(meta["network_data_format"]["inputs"]["image"]["spatial_shape"]) == spatial
    for cfg in ("configs/train.json", "configs/evaluate.json"):
        json.loads((task.bundle / cfg).read_text())
    # The overridable variables that BundleTrainer points at each site's data.
    train = json.loads((task.bundle / "configs/train.json").read_text())
    assert {"datalist", "dataset_dir", "val_datalist", "val_dataset_dir", "device", "amp"} <= set(train)
