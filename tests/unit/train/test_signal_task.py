"""The 1-D example task: generated ECG-like .npy records and the `ecg_densenet` bundle (one output,
BCEWithLogitsLoss, ROC AUC) trained and evaluated through BundleTrainer with real MONAI."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from swarmd.train import BundleTrainer, initial_weights, read_datalist


def test_signal_demo_data_is_1d_npy_with_site_shift(demo_signal):
    d = demo_signal
    assert d.class_names == ("normal", "arrhythmia")
    for site in d.sites:
        items = read_datalist(site.datalist, "training").items
        assert all(Path(e["image"]).suffix == ".npy" and e["label"] in (0, 1) for e in items)
        record = np.load(items[0]["image"])
        assert record.shape == (256,) and record.dtype == np.float32
    assert d.sites[0].scanner != d.sites[1].scanner
    assert d.test_counts == (8, 8)


def test_the_1d_bundle_trains_rounds_and_reports_auc(demo_signal, make_task, tmp_path):
    task = make_task("ecg_densenet", local_steps=10)
    site = demo_signal.sites[0]
    trainer = BundleTrainer(task, site.datalist, device="cpu", threads=1, workdir=tmp_path / "work")
    trainer.initialize()  # validates the .npy files and the 0/1 labels of a one-output head
    weights = initial_weights(task)
    before = trainer.evaluate(weights, demo_signal.test_datalist)
    for r in range(2):
        result = trainer.train(weights, round=r)
        weights = result.weights
        assert result.n_samples == site.n_train and result.steps == 10 and math.isfinite(result.loss)
    after = trainer.evaluate(weights, demo_signal.test_datalist)
    trainer.finalize()
    assert set(before) == set(after) == {"auc"}
    assert after["auc"] > max(0.8, before["auc"])  # 20 steps on one site (both classes) separate them
