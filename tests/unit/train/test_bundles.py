"""The example bundles and task files that ship with swarmd load as tasks and as MONAI bundles."""

from __future__ import annotations

import json

import pytest
import torch

from swarmd.task import load_task
from swarmd.train import BUNDLES_DIR, example_task_file


@pytest.mark.parametrize(("name", "spatial"), [("cxr_densenet", 2), ("tumor_unet", 3), ("ecg_densenet", 1)])
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


@pytest.mark.parametrize("name", ["cxr_densenet", "tumor_unet", "ecg_densenet"])
def test_example_networks_keep_no_batch_statistics(name):
    """Batch statistics are per site and do not average into a model that fits anyone's data: with
    BatchNorm the classification swarm fell from AUC 0.85 to 0.72 over 10 rounds where a
    centralized model reached 0.96 (docs/benchmarks.md, learning). Instance and group norms do not
    have that problem, so the examples use them, and train and inference build the same network."""
    from monai.bundle import ConfigParser

    nets = []
    for cfg in ("train.json", "inference.json"):
        parser = ConfigParser()
        parser.read_config(BUNDLES_DIR / name / "configs" / cfg)
        nets.append(parser.get_parsed_content("network_def"))
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in nets[0].modules())
    assert nets[0].state_dict().keys() == nets[1].state_dict().keys()


@pytest.mark.parametrize(
    ("name", "pattern"),
    [
        ("cxr_densenet", "predictions.csv"),
        ("tumor_unet", "*_seg.nii.gz"),
        ("ecg_densenet", "predictions.csv"),
    ],
)
def test_inference_config_runs_an_exported_model(name, pattern, request, tmp_path):
    """What `swarm model export` produces (bundle + models/model.safetensors) runs standalone."""
    import shutil
    import warnings

    from monai.bundle import ConfigWorkflow

    from swarmd.checkpoint import save_file
    from swarmd.train import initial_weights

    fixture = {
        "cxr_densenet": "demo_classification",
        "tumor_unet": "demo_segmentation",
        "ecg_densenet": "demo_signal",
    }
    demo = request.getfixturevalue(fixture[name])
    task = load_task(example_task_file(name))
    bundle = tmp_path / name
    shutil.copytree(task.bundle, bundle)
    save_file(initial_weights(task), bundle / "models" / "model.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        workflow = ConfigWorkflow(
            config_file=str(bundle / "configs/inference.json"),
            workflow_type=None,
            logging_file=False,
            bundle_root=str(bundle),
            datalist=str(demo.test_datalist),
            dataset_dir=str(demo.test_datalist.parent),
            datalist_section="validation",
            device="$torch.device('cpu')",
        )
        workflow.initialize()
        workflow.run()
    outputs = list((bundle / "eval").glob(pattern))
    n_test = sum(demo.test_counts)
    if name != "tumor_unet":
        assert len(outputs) == 1 and len(outputs[0].read_text().strip().splitlines()) == n_test
    else:
        assert len(outputs) == n_test
