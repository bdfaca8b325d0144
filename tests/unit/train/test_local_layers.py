"""FedBN's local layers: which names stay local, the per-site file that keeps them, and the trainer
that composes the merged shared layers with them (a recording trainer stands in for MONAI here;
test_personalise.py runs the real one)."""

from __future__ import annotations

import errno
import os
from dataclasses import replace
from pathlib import Path

import pytest
import safetensors.torch
import torch
from torch import nn

from swarmd.checkpoint import CorruptCheckpointError
from swarmd.errors import TaskError
from swarmd.fsutil import DiskFullError
from swarmd.scores import Scores
from swarmd.task import Task, WeightKind, load_task, parse_task
from swarmd.train import example_task_file, initial_model, initial_weights, local_names
from swarmd.train.local_layers import (
    LOCAL_FILE,
    LocalLayerStore,
    LocalLayersTrainer,
    compose,
    select_local,
    split,
)
from swarmd.train.trainer import Trainer, TrainResult


def _net() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 4, 3),
        nn.BatchNorm2d(4),
        nn.InstanceNorm2d(4, track_running_stats=True),
        nn.InstanceNorm2d(4, affine=True),  # no running statistics: nothing site-specific to keep
        nn.GroupNorm(2, 4),
    )


def test_batchnorm_selects_every_batchnorm_entry_and_tracked_instancenorm_stats():
    names = select_local(_net(), ("batchnorm",))
    assert names == {
        "1.weight",
        "1.bias",
        "1.running_mean",
        "1.running_var",
        "1.num_batches_tracked",
        "2.running_mean",
        "2.running_var",
        "2.num_batches_tracked",
    }


def test_patterns_are_globs_over_state_dict_names_and_add_up():
    assert select_local(_net(), ("4.*",)) == {"4.weight", "4.bias"}
    assert select_local(_net(), ("batchnorm", "3.weight")) == select_local(_net(), ("batchnorm",)) | {
        "3.weight"
    }


@pytest.mark.parametrize(
    ("patterns", "said"),
    [
        (("nothing.*",), "'nothing.*' matches no parameter or buffer"),
        (("*",), "keeps every parameter local"),
    ],
)
def test_patterns_that_match_nothing_or_everything_are_refused(patterns, said):
    with pytest.raises(TaskError, match=said.replace("*", r"\*").replace(".", r"\.")):
        select_local(_net(), patterns)


def test_batchnorm_on_a_network_without_it_is_refused_naming_the_network():
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.GroupNorm(2, 4))
    with pytest.raises(TaskError, match=r"'batchnorm' matches no BatchNorm .* network Sequential") as err:
        select_local(net, ("batchnorm",))
    assert "BatchNorm bundle" in (err.value.hint or "")


def _toml(tmp_path: Path, swarm: str) -> Task:
    src = load_task(example_task_file("cxr_densenet"))
    return parse_task(
        {"task": {"name": "t", "bundle": str(src.bundle)}, "swarm": _swarm_table(swarm)}, tmp_path
    )


def _swarm_table(text: str) -> dict[str, object]:
    import tomllib

    return tomllib.loads(text)


def test_task_setting_takes_a_string_or_a_list_and_keeps_old_hashes(tmp_path):
    plain = _toml(tmp_path, "")
    one = _toml(tmp_path, 'local_layers = "batchnorm"')
    many = _toml(tmp_path, 'local_layers = ["batchnorm", "*.norm5.*"]')
    assert plain.swarm.local_layers == () and plain.swarm.personalise_steps == 0
    assert one.swarm.local_layers == ("batchnorm",)
    assert many.swarm.local_layers == ("batchnorm", "*.norm5.*")
    assert len({plain.hash, one.hash, many.hash, _toml(tmp_path, "personalise_steps = 3").hash}) == 4
    # absent settings leave the canonical task as it was before they existed
    assert b"local_layers" not in plain.hash_hex.encode() and "local_layers" not in str(_canonical(plain))
    assert "personalise_steps" not in str(_canonical(plain))


def _canonical(task: Task) -> bytes:
    from swarmd.task import canonical_task

    return canonical_task(task)


@pytest.mark.parametrize(
    ("line", "said"),
    [
        ("local_layers = 3", "local_layers must be"),
        ("local_layers = []", "local_layers must be"),
        ('local_layers = [""]', "local_layers must be"),
        ("personalise_steps = -1", "personalise_steps must be >= 0"),
    ],
)
def test_bad_settings_are_refused_at_parse(tmp_path, line, said):
    with pytest.raises(TaskError, match=said):
        _toml(tmp_path, line)


def test_fedbn_on_the_groupnorm_bundle_is_refused_when_the_network_is_built():
    task = load_task(example_task_file("cxr_densenet"))
    task = replace(task, swarm=replace(task.swarm, local_layers=("batchnorm",)))
    with pytest.raises(TaskError, match=r"matches no BatchNorm .* DenseNet121"):
        initial_model(task)  # what deploy hashes and every daemon rebuilds


def test_the_shared_initial_model_leaves_out_exactly_the_local_layers():
    task = load_task(example_task_file("cxr_densenet_bn"))
    full, shared, names = initial_weights(task), initial_model(task), local_names(task)
    assert names and set(shared) == set(full) - names
    assert all(torch.equal(shared[k], full[k]) for k in shared)
    gn = load_task(example_task_file("cxr_densenet"))
    assert initial_model(gn).keys() == initial_weights(gn).keys()


# --- the store -------------------------------------------------------------------------------------


def _local() -> dict[str, torch.Tensor]:
    return {"bn.running_mean": torch.arange(4.0), "bn.num_batches_tracked": torch.tensor(7)}


def test_store_round_trips_tensors_and_round(tmp_path):
    store = LocalLayerStore(tmp_path / LOCAL_FILE)
    assert store.load() is None
    store.save(_local(), 3)
    loaded = store.load()
    assert loaded is not None
    state, r = loaded
    assert r == 3 and state.keys() == _local().keys()
    assert all(torch.equal(state[k], v) and state[k].dtype == v.dtype for k, v in _local().items())


def test_a_corrupt_file_is_named(tmp_path):
    store = LocalLayerStore(tmp_path / LOCAL_FILE)
    store.save(_local(), 0)
    data = store.path.read_bytes()
    store.path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CorruptCheckpointError, match=f"local layers file {store.path} is corrupt") as err:
        store.load()
    assert "move it aside" in (err.value.hint or "")


def test_a_save_cut_short_by_a_full_disk_leaves_the_old_file_and_no_tmp(tmp_path, monkeypatch):
    store = LocalLayerStore(tmp_path / LOCAL_FILE)
    store.save(_local(), 0)
    before = store.path.read_bytes()

    def half_then_full(state, path, metadata=None):  # the disk fills up mid-write
        Path(path).write_bytes(before[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", half_then_full)
    with pytest.raises(DiskFullError, match=f"cannot write {store.path}"):
        store.save(_local(), 1)
    assert store.path.read_bytes() == before
    assert os.listdir(tmp_path) == [LOCAL_FILE]


# --- the trainer -----------------------------------------------------------------------------------


class Recording(Trainer):
    """Trains by adding `step` to every float tensor; records what it was given."""

    def __init__(self, kind: WeightKind = WeightKind.WEIGHTS) -> None:
        self.kind, self.seen = kind, []

    def initialize(self) -> None: ...

    def train(self, global_weights: dict[str, torch.Tensor], round: int) -> TrainResult:
        self.seen.append(dict(global_weights))
        out = {k: (v + 1 if v.is_floating_point() else v + 2) for k, v in global_weights.items()}
        if self.kind is WeightKind.DIFF:
            out = {k: out[k] - v for k, v in global_weights.items()}
        return TrainResult(out, self.kind, 10, 0.5, {}, 0.1, steps=2)

    def evaluate(self, weights: dict[str, torch.Tensor], data_list: Path | None = None) -> Scores:
        self.seen.append(dict(weights))
        return {}

    def abort(self) -> None: ...

    def finalize(self) -> None: ...


@pytest.fixture(scope="module")
def bn_task() -> Task:
    return load_task(example_task_file("cxr_densenet_bn"))


@pytest.mark.parametrize("kind", [WeightKind.WEIGHTS, WeightKind.DIFF])
def test_the_site_trains_merged_shared_plus_its_own_local_layers(bn_task, tmp_path, kind):
    inner = Recording(kind)
    trainer = LocalLayersTrainer(inner, bn_task, tmp_path)
    names = local_names(bn_task)
    shared0, local0 = split(initial_weights(bn_task), names)
    assert (tmp_path / LOCAL_FILE).exists()  # seeded from the initial model

    merged = {k: v + 10 if v.is_floating_point() else v for k, v in shared0.items()}  # "the merge"
    result = trainer.train(merged, round=0)
    given = inner.seen[-1]
    assert given.keys() == compose(merged, local0).keys()
    assert all(torch.equal(given[k], merged[k]) for k in merged)
    assert all(torch.equal(given[k], local0[k]) for k in local0)
    assert result.weights.keys() == shared0.keys()  # the update leaves without the local layers

    stored = LocalLayerStore(tmp_path / LOCAL_FILE).load()
    assert stored is not None and stored[1] == 0
    k = next(n for n in names if n.endswith("running_var"))
    assert torch.equal(stored[0][k], local0[k] + 1)  # the trained local layers, whatever the send kind

    again = LocalLayersTrainer(Recording(), bn_task, tmp_path)  # a restart resumes with them
    again.evaluate(merged)
    assert torch.equal(again.inner.seen[-1][k], local0[k] + 1)


def test_a_file_of_another_task_is_refused(bn_task, tmp_path):
    LocalLayerStore(tmp_path / LOCAL_FILE).save(_local(), 0)
    with pytest.raises(CorruptCheckpointError, match="the task keeps 605 local"):
        LocalLayersTrainer(Recording(), bn_task, tmp_path)
