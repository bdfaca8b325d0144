"""BundleTrainer drives the real example bundles through MonaiAlgo on generated files (CPU)."""

from __future__ import annotations

import threading
import time
from dataclasses import replace

import pytest
import torch

from swarmd.codec import content_hash
from swarmd.errors import DataError, TrainingAborted, TrainingError
from swarmd.task import WeightKind
from swarmd.train import BundleTrainer, TrainPhase, initial_weights
from swarmd.train.weights import check_layout, layout_of


def _changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    return [k for k in before if before[k].is_floating_point() and not torch.equal(before[k], after[k])]


def _trainer(task, demo, workdir, site: int = 0) -> BundleTrainer:
    trainer = BundleTrainer(task, demo.site_datalists[site], device="cpu", threads=1, workdir=workdir)
    trainer.initialize()
    return trainer


@pytest.fixture(scope="module")
def cls_trainer(cls_task, demo_classification, tmp_path_factory):
    trainer = _trainer(cls_task, demo_classification, tmp_path_factory.mktemp("cls-work"))
    yield trainer
    trainer.finalize()


def test_classification_bundle_trains_two_steps_and_reports_auc(cls_trainer, cls_task, demo_classification):
    w0 = initial_weights(cls_task)
    result = cls_trainer.train(w0, round=0)

    assert result.steps == 2
    assert result.weight_type == WeightKind.WEIGHTS
    assert result.n_samples == demo_classification.sites[0].n_train
    assert result.loss > 0 and result.metrics["train_loss"] == result.loss
    # 10 training images, batch size 8: a full batch, then the 2 left before the loader restarts
    assert result.metrics["samples_seen"] == 8 + 2
    assert result.weights.keys() == w0.keys()
    assert all(not k.startswith("module.") for k in result.weights)
    assert all(t.device.type == "cpu" and t.is_contiguous() for t in result.weights.values())
    assert len(_changed(w0, result.weights)) > 100  # every conv moved, not just the head

    metrics = cls_trainer.evaluate(result.weights, demo_classification.test_datalist)
    assert set(metrics) == {"auc"}
    assert 0.0 <= metrics["auc"] <= 1.0


def test_returned_weights_are_a_snapshot_not_the_live_network(cls_trainer, cls_task):
    first = cls_trainer.train(initial_weights(cls_task), round=0)
    frozen = {k: v.clone() for k, v in first.weights.items()}
    cls_trainer.train(first.weights, round=1)  # trains the live network further
    assert all(torch.equal(first.weights[k], frozen[k]) for k in frozen)


def test_rounds_start_from_the_given_weights(cls_trainer, cls_task):
    w0 = initial_weights(cls_task)
    a = cls_trainer.train(w0, round=0)
    b = cls_trainer.train(w0, round=0)  # the network's own state from round a must not leak in
    # Both rounds start from w0; with shuffled batches they differ, but they stay close to w0.
    drift_a = sum(float((a.weights[k] - w0[k]).abs().sum()) for k in w0 if w0[k].is_floating_point())
    drift_ab = sum(float((a.weights[k] - b.weights[k]).abs().sum()) for k in w0 if w0[k].is_floating_point())
    assert drift_ab < 3 * drift_a


def test_partial_or_non_finite_weights_are_refused(cls_trainer, cls_task):
    w0 = initial_weights(cls_task)
    partial = dict(w0)
    partial.pop(next(iter(partial)))
    with pytest.raises(TrainingError, match="1 missing"):
        cls_trainer.train(partial, round=0)
    bad = dict(w0)
    name = next(k for k, v in bad.items() if v.is_floating_point())
    bad[name] = torch.full_like(bad[name], float("nan"))
    with pytest.raises(TrainingError, match="NaN"):
        cls_trainer.train(bad, round=0)
    reshaped = dict(w0)
    reshaped[name] = reshaped[name].reshape(-1)
    with pytest.raises(TrainingError, match="shape"):
        cls_trainer.evaluate(reshaped)


def test_non_finite_loss_raises_and_the_trainer_recovers(cls_trainer, cls_task):
    w0 = initial_weights(cls_task)
    exploding = dict(w0)
    head = next(k for k in w0 if k.endswith("out.weight"))
    exploding[head] = torch.full_like(w0[head], 3e38)  # finite weights, infinite logits
    with pytest.raises(TrainingError, match="non-finite loss"):
        cls_trainer.train(exploding, round=0)
    assert cls_trainer.phase is TrainPhase.IDLE
    assert cls_trainer.train(w0, round=1).steps == 2


def test_abort_from_another_thread_stops_a_long_round(make_task, demo_classification, tmp_path):
    task = make_task("cxr_densenet", local_steps=10_000)
    trainer = _trainer(task, demo_classification, tmp_path)
    w0 = initial_weights(task)
    outcome: dict[str, BaseException] = {}

    def run() -> None:
        try:
            trainer.train(w0, round=0)
        except TrainingError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=run)
    worker.start()
    deadline = time.monotonic() + 60
    while trainer.progress == 0 and time.monotonic() < deadline:  # wait for the first iteration
        time.sleep(0.01)
    aborted_at = time.monotonic()
    trainer.abort()
    worker.join(timeout=30)
    assert not worker.is_alive()
    assert isinstance(outcome.get("error"), TrainingAborted)
    assert time.monotonic() - aborted_at < 10  # one iteration, not 10,000

    # The next round starts on an epoch boundary and runs exactly local_steps iterations again
    # (shortened here to 2 by changing the engine's epoch length, the knob initialize() sets).
    trainer._algo.trainer.state.epoch_length = 2
    assert trainer.train(w0, round=1).steps == 2
    trainer.finalize()


def test_diff_mode_sends_local_minus_global(make_task, demo_classification, tmp_path):
    task = make_task("cxr_densenet", local_steps=2, send=WeightKind.DIFF)
    trainer = _trainer(task, demo_classification, tmp_path)
    w0 = initial_weights(task)
    result = trainer.train(w0, round=0)
    trainer.finalize()
    assert result.weight_type == WeightKind.DIFF
    check_layout(result.weights, layout_of(w0), "diff")
    moved = [k for k, v in result.weights.items() if v.is_floating_point() and v.abs().sum() > 0]
    assert len(moved) > 100


def test_segmentation_bundle_trains_two_steps_and_reports_dice(seg_task, demo_segmentation, tmp_path):
    trainer = _trainer(seg_task, demo_segmentation, tmp_path)
    w0 = initial_weights(seg_task)
    result = trainer.train(w0, round=0)
    assert result.steps == 2 and result.weights.keys() == w0.keys()
    assert _changed(w0, result.weights)
    own = trainer.evaluate(result.weights)  # the site's own validation section
    test = trainer.evaluate(result.weights, demo_segmentation.test_datalist)
    trainer.finalize()
    for metrics in (own, test):
        assert set(metrics) == {"dice"} and 0.0 <= metrics["dice"] <= 1.0


def test_initial_weights_are_deterministic_and_leave_the_rng_alone(cls_task):
    torch.manual_seed(123)
    expected_next = torch.rand(1)
    torch.manual_seed(123)
    a = initial_weights(cls_task)
    assert torch.equal(torch.rand(1), expected_next)
    b = initial_weights(cls_task)
    assert content_hash(a) == content_hash(b)
    other = initial_weights(replace(cls_task, seed=cls_task.seed + 1))
    assert content_hash(other) != content_hash(a)
    assert all(t.dtype == torch.float32 for t in a.values() if t.is_floating_point())


def test_train_before_initialize_and_bad_datalist(cls_task, demo_classification, tmp_path):
    trainer = BundleTrainer(cls_task, demo_classification.site_datalists[0], workdir=tmp_path)
    with pytest.raises(TrainingError, match="not initialized"):
        trainer.train(initial_weights(cls_task), round=0)
    missing = BundleTrainer(cls_task, tmp_path / "nope.json", workdir=tmp_path)
    with pytest.raises(DataError, match="does not exist"):
        missing.initialize()


def test_abort_before_a_queued_call_starts_stops_that_call_only(cls_trainer, cls_task):
    # The daemon submits train() to an executor and may abort before the worker picks it up.
    w0 = initial_weights(cls_task)
    cls_trainer.abort()
    with pytest.raises(TrainingAborted, match="before training started"):
        cls_trainer.train(w0, round=0)
    assert cls_trainer.phase is TrainPhase.IDLE
    assert cls_trainer.train(w0, round=0).steps == 2  # the abort was consumed


def test_real_dicom_slices_train_through_the_classification_bundle(cls_task, tmp_path):
    """Hospital files take the same path: pydicom's CT_small.dcm (128x128, 16-bit) is resized to 64x64."""
    import json
    import shutil

    from pydicom.data import get_testdata_file

    for i in range(4):
        shutil.copy(get_testdata_file("CT_small.dcm"), tmp_path / f"ct{i}.dcm")
    entries = [{"image": f"ct{i}.dcm", "label": i % 2} for i in range(4)]
    datalist = tmp_path / "dicom.json"
    datalist.write_text(json.dumps({"training": entries, "validation": entries}))
    trainer = BundleTrainer(cls_task, datalist, device="cpu", threads=1, workdir=tmp_path / "work")
    trainer.initialize()
    result = trainer.train(initial_weights(cls_task), round=0)
    metrics = trainer.evaluate(result.weights)
    trainer.finalize()
    assert result.steps == 2 and result.n_samples == 4
    assert 0.0 <= metrics["auc"] <= 1.0
