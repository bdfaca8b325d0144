"""Local training: any MONAI bundle through monai.fl's ClientAlgo lifecycle, device choice,
datalist validation, example bundles, demo data and baselines.

The daemon uses `BundleTrainer` (initialize / train / evaluate / abort / finalize) and
`initial_model` (the shared part of `initial_weights`; `LocalLayersTrainer` keeps FedBN's local
layers at the site); `check_private` is task validation for DP-SGD (Opacus-compatible layers) and
`BundleTrainer.make_private` turns DP-SGD on; `generate_demo_data` writes synthetic multi-site data
for demos and tests. `check_task` is `swarm task check`: a bundle run once on a site's data, with the
bundle contract (`BundleMismatch`: it does not read the data swarmd gives it) checked.
"""

from __future__ import annotations

from pathlib import Path

from swarmd.train.check import CheckReport, check_task
from swarmd.train.contract import BundleMismatch
from swarmd.train.data import LabelKind, load_image, read_datalist, validate_datalist
from swarmd.train.demodata import DemoData, SiteData, generate_demo_data
from swarmd.train.device import choose_device, configure_threads, thread_count
from swarmd.train.headers import ImageInfo, inspect_file, inspect_image
from swarmd.train.local_layers import LocalLayersTrainer, initial_model, local_names
from swarmd.train.private import check_private, unsupported_layers
from swarmd.train.trainer import BundleTrainer, Trainer, TrainPhase, TrainResult
from swarmd.train.weights import initial_weights

BUNDLES_DIR = Path(__file__).parent / "bundles"


def example_task_file(name: str) -> Path:
    """Path of an example task file shipped with swarmd: `cxr_densenet`, `tumor_unet` or `ecg_densenet`."""
    return BUNDLES_DIR / f"{name}.swarm.toml"


__all__ = [
    "BUNDLES_DIR",
    "BundleMismatch",
    "BundleTrainer",
    "CheckReport",
    "DemoData",
    "ImageInfo",
    "LabelKind",
    "LocalLayersTrainer",
    "SiteData",
    "TrainPhase",
    "TrainResult",
    "Trainer",
    "check_private",
    "check_task",
    "choose_device",
    "configure_threads",
    "example_task_file",
    "generate_demo_data",
    "initial_model",
    "initial_weights",
    "inspect_file",
    "inspect_image",
    "load_image",
    "local_names",
    "read_datalist",
    "thread_count",
    "unsupported_layers",
    "validate_datalist",
]
