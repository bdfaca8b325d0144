"""The real trainer on the BatchNorm bundle with FedBN: a round sends only the shared layers, the local
ones land in the site's file, and personalisation fine-tunes the whole model for its own step count
without changing the rounds' (it runs after the last round; the daemon keeps the result off chain)."""

from __future__ import annotations

import pytest
import torch

from swarmd.task import WeightKind
from swarmd.train import BundleTrainer, initial_model, initial_weights, local_names
from swarmd.train.local_layers import LOCAL_FILE, LocalLayerStore, LocalLayersTrainer


@pytest.fixture
def bn_task(make_task):
    return make_task("cxr_densenet_bn", local_steps=2)


@pytest.fixture
def fedbn(bn_task, demo_classification, tmp_path):
    state = tmp_path
    inner = BundleTrainer(
        bn_task, demo_classification.site_datalists[0], device="cpu", threads=1, workdir=state
    )
    inner.initialize()
    yield LocalLayersTrainer(inner, bn_task, state), state
    inner.finalize()


def test_a_fedbn_round_then_personalisation_with_the_real_trainer(fedbn, bn_task, demo_classification):
    trainer, state = fedbn
    names = local_names(bn_task)
    shared0 = initial_model(bn_task)
    local0 = {k: v for k, v in initial_weights(bn_task).items() if k in names}

    result = trainer.train(shared0, round=0)
    assert result.steps == 2 and result.weights.keys() == shared0.keys()
    stored, r = LocalLayerStore(state / LOCAL_FILE).load()
    var = next(k for k in names if k.endswith("running_var"))
    assert r == 0 and not torch.equal(stored[var], local0[var])  # the site's own batch statistics

    personal = trainer.personalise(result.weights, steps=1, round=1)
    assert personal.steps == 1 and personal.weight_type == WeightKind.WEIGHTS
    assert personal.weights.keys() == shared0.keys() | names  # whole: it never leaves the site
    assert not torch.equal(personal.weights[var], stored[var])
    assert LocalLayerStore(state / LOCAL_FILE).load()[1] == 0  # the rounds' local layers are untouched

    scores = trainer.evaluate(personal.weights, demo_classification.test_datalist)
    assert set(scores) == set(trainer.evaluate(result.weights, demo_classification.test_datalist)) == {"auc"}
    assert trainer.train(result.weights, round=1).steps == 2  # later rounds keep their length


def test_personalisation_of_a_diff_sending_task_returns_whole_weights(
    make_task, demo_classification, tmp_path
):
    task = make_task("cxr_densenet", local_steps=2, send=WeightKind.DIFF)
    trainer = BundleTrainer(
        task, demo_classification.site_datalists[1], device="cpu", threads=1, workdir=tmp_path
    )
    trainer.initialize()
    try:
        w0 = initial_weights(task)
        personal = trainer.personalise(w0, steps=1, round=0)
        assert personal.steps == 1 and personal.weight_type == WeightKind.WEIGHTS
        head = next(k for k in w0 if k.startswith("class_layers") and k.endswith("weight"))
        assert not torch.equal(personal.weights[head], w0[head])
        assert personal.weights[head].abs().mean() > 0.5 * w0[head].abs().mean()  # weights, not a diff
    finally:
        trainer.finalize()
