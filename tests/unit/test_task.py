"""swarm.toml: parsing, defaults, every validation error by name, and the canonical task hash (stable
under key order and layout, changed by any setting or bundle byte). Uses a small bundle directory of
its own; the example bundles' hashes are pinned in the e2e tests through the chain binding."""

from __future__ import annotations

import dataclasses
import re
import shutil
from pathlib import Path

import pytest

from swarmd.errors import TaskError
from swarmd.task import (
    REVEAL_WINDOW,
    BundleInputs,
    SwarmSettings,
    Task,
    WeightKind,
    canonical_task,
    load_task,
    parse_task,
)

TASK = {"name": "demo", "bundle": "bundle"}


def _parse(root: Path, swarm: dict[str, object] | None = None, **task: object) -> Task:
    data: dict[str, object] = {"task": {**TASK, **task}}
    if swarm is not None:
        data["swarm"] = swarm
    return parse_task(data, root)


def _error(root: Path, swarm: dict[str, object] | None = None, **task: object) -> str:
    with pytest.raises(TaskError) as exc:
        _parse(root, swarm, **task)
    return str(exc.value)


def test_a_minimal_task_gets_the_documented_defaults(root: Path) -> None:
    task = _parse(root)
    assert (task.name, task.bundle, task.root) == ("demo", (root / "bundle").resolve(), root)
    assert (task.train_config, task.eval_config, task.seed) == (
        "configs/train.json",
        "configs/evaluate.json",
        0,
    )
    assert task.swarm == SwarmSettings()
    assert task.swarm.send is WeightKind.WEIGHTS and task.swarm.merge == "fedavg"


def test_settings_are_read_with_their_types(root: Path) -> None:
    swarm = {
        "rounds": 3,
        "send": "diff",
        "merge": "median",
        "trim_ratio": 0,
        "norm_bound": 2,
        "admission": "majority",
    }
    task = _parse(root, swarm, seed=7, eval_config="configs/other.json")
    s = task.swarm
    assert (s.rounds, s.send, s.merge, s.admission, task.seed, task.eval_config) == (
        3, WeightKind.DIFF, "median", "majority", 7, "configs/other.json"
    )  # fmt: skip
    assert isinstance(s.trim_ratio, float) and isinstance(s.norm_bound, float)  # TOML ints widen to floats


@pytest.mark.parametrize("send", list(WeightKind))
def test_send_mode_parses_to_its_weight_kind(root: Path, send: WeightKind) -> None:
    assert _parse(root, {"send": send.value}).swarm.send is send


@pytest.mark.parametrize("bad", ["weight", "DIFF", 1, True])
def test_an_unknown_send_mode_names_the_choices(root: Path, bad: object) -> None:
    assert "swarm.send must be one of weights, diff" in _error(root, {"send": bad})


@pytest.mark.parametrize(
    ("swarm", "message"),
    [
        ({"rounds": 0}, "swarm.rounds must be >= 1"),
        ({"local_steps": 0}, "swarm.local_steps must be >= 1"),
        ({"min_peers": 0}, "swarm.min_peers must be >= 1"),
        (
            {"merge": "mean"},
            "swarm.merge must be one of fedavg, median, geomedian, trimmed_mean, krum, got 'mean'",
        ),
        ({"admission": "vote"}, "swarm.admission must be one of admin, majority, got 'vote'"),
        ({"commit_window": 0}, "swarm.commit_window must be >= 1 block"),
        ({"leader_timeout": 0}, "swarm.leader_timeout must be >= 1 block"),
        ({"fanout": 0}, "swarm.fanout must be >= 1"),
        ({"trim_ratio": 0.5}, "swarm.trim_ratio must be in [0, 0.5)"),
        ({"trim_ratio": -0.1}, "swarm.trim_ratio must be in [0, 0.5)"),
        ({"norm_bound": -1.0}, "swarm.norm_bound must be >= 0 (0 disables it)"),
        ({"max_update_bytes": 0}, "swarm.max_update_bytes must be > 0"),
        ({"eval_every": -1}, "swarm.eval_every must be >= 0"),
        ({"rounds": "5"}, "[swarm].rounds must be int, got '5'"),
        ({"rounds": True}, "[swarm].rounds must be int, got True"),
        ({"rounds": 2.0}, "[swarm].rounds must be int, got 2.0"),
        ({"trim_ratio": True}, "[swarm].trim_ratio must be float, got True"),
        ({"merge": 3}, "[swarm].merge must be str, got 3"),
        ({"round": 3}, "[swarm]: unknown key(s) round"),
    ],
)
def test_every_swarm_setting_is_validated_by_name(root: Path, swarm: dict[str, object], message: str) -> None:
    assert message in _error(root, swarm)


def test_task_table_errors_are_named(root: Path) -> None:
    with pytest.raises(TaskError, match="missing \\[task\\] table"):
        parse_task({"swarm": {}}, root)
    with pytest.raises(TaskError, match="unknown section\\(s\\) extra"):
        parse_task({"task": TASK, "extra": {}}, root)
    with pytest.raises(TaskError, match="\\[swarm\\] must be a table"):
        parse_task({"task": TASK, "swarm": 3}, root)
    assert "[task]: unknown key(s) colour" in _error(root, colour="red")
    assert "[task].name is required (a string)" in _error(root, name="")
    assert "[task].bundle is required (a string)" in _error(root, bundle=3)
    for seed in (-1, True, "1"):
        assert "[task].seed must be an int >= 0" in _error(root, seed=seed)
    assert "does not exist" in _error(root, bundle="nowhere")
    assert "has no configs/missing.json" in _error(root, train_config="configs/missing.json")
    assert "config names must be strings" in _error(root, eval_config=5)


def test_load_task_names_the_file_on_every_problem(root: Path) -> None:
    missing = root / "absent.toml"
    with pytest.raises(TaskError, match=re.escape("absent.toml does not exist")):
        load_task(missing)
    broken = root / "broken.toml"
    broken.write_text("[task\n")
    with pytest.raises(TaskError, match=re.escape("broken.toml: not valid TOML")):
        load_task(broken)
    invalid = root / "invalid.toml"
    invalid.write_text('[task]\nname = "demo"\nbundle = "bundle"\n[swarm]\nrounds = 0\n')
    with pytest.raises(TaskError, match=re.escape("invalid.toml: swarm.rounds must be >= 1")):
        load_task(invalid)


def _write(root: Path, text: str, name: str = "swarm.toml") -> Path:
    path = root / name
    path.write_text(text)
    return path


def test_the_hash_is_stable_under_key_order_layout_and_location(root: Path, tmp_path_factory) -> None:
    one = _write(
        root, '[task]\nname = "demo"\nbundle = "bundle"\nseed = 1\n[swarm]\nrounds = 3\nsend = "diff"\n'
    )
    two = _write(
        root,
        '# same task, keys reordered\n[swarm]\nsend = "diff"\nrounds = 3\n\n'
        '[task]\nseed = 1\nbundle = "bundle"\nname = "demo"\n',
        "reordered.toml",
    )
    assert load_task(one).hash == load_task(two).hash
    # Defaults written out hash like defaults left out; paths are not hashed, only names and bytes.
    explicit = _write(
        root, '[task]\nname = "demo"\nbundle = "bundle"\n[swarm]\nsend = "weights"\nrounds = 5\n', "x.toml"
    )
    assert load_task(explicit).hash == _parse(root).hash
    elsewhere = tmp_path_factory.mktemp("elsewhere")
    shutil.copytree(root / "bundle", elsewhere / "b")
    moved = _parse(elsewhere, bundle="b")
    assert moved.bundle != _parse(root).bundle and moved.hash == _parse(root).hash
    assert _parse(root).hash_hex == "0x" + _parse(root).hash.hex() and len(_parse(root).hash) == 32
    assert b'"send":"weights"' in canonical_task(_parse(root))  # the enum hashes as its TOML value


def _changed(value: object) -> object:
    if isinstance(value, WeightKind):
        return WeightKind.DIFF if value is WeightKind.WEIGHTS else WeightKind.WEIGHTS
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, tuple):  # local_layers
        return (*value, "batchnorm")
    return value + 1  # type: ignore[operator]


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(SwarmSettings)])
def test_any_swarm_setting_changes_the_hash(root: Path, field: str) -> None:
    task = _parse(root)
    other = dataclasses.replace(task.swarm, **{field: _changed(getattr(task.swarm, field))})
    assert dataclasses.replace(task, swarm=other).hash != task.hash


def test_task_fields_and_bundle_bytes_change_the_hash(root: Path) -> None:
    base = _parse(root).hash
    assert _parse(root, seed=1).hash != base
    assert _parse(root, name="other").hash != base
    assert _parse(root, eval_config="configs/other.json").hash != base
    (root / "bundle" / "configs" / "train.json").write_text('{"lr": 0.2}')
    assert _parse(root).hash != base
    (root / "bundle" / "configs" / "train.json").write_text('{"lr": 0.1}')
    assert _parse(root).hash == base
    (root / "bundle" / "models").mkdir()
    (root / "bundle" / "models" / "extra.pt").write_bytes(b"\0")
    assert _parse(root).hash != base


def test_caches_and_hidden_files_do_not_change_the_hash(root: Path) -> None:
    base = _parse(root).hash
    (root / "bundle" / "__pycache__").mkdir()
    (root / "bundle" / "__pycache__" / "x.pyc").write_bytes(b"\1")
    (root / "bundle" / ".DS_Store").write_bytes(b"\2")
    assert _parse(root).hash == base


# --- [bundle.inputs]: swarmd's inputs mapped onto a bundle's own variable names ----------------------


def _inputs(root: Path, inputs: object) -> Task:
    return parse_task({"task": TASK, "bundle": {"inputs": inputs}}, root)


def _inputs_error(root: Path, bundle: object) -> str:
    with pytest.raises(TaskError) as exc:
        parse_task({"task": TASK, "bundle": bundle}, root)
    return str(exc.value)


def test_bundle_inputs_default_to_swarmds_own_names_and_map_onto_the_bundles(root: Path) -> None:
    assert _parse(root).inputs == BundleInputs()
    assert BundleInputs().items()[0] == ("datalist", "datalist") and not BundleInputs().renamed()
    zoo = _inputs(
        root, {"datalist": "data_list_file_path", "dataset_dir": "data_root", "device": "train#device"}
    )
    assert zoo.inputs.datalist == "data_list_file_path" and zoo.inputs.dataset_dir == "data_root"
    assert zoo.inputs.val_datalist == "val_datalist"  # what is not mapped keeps its name
    assert zoo.inputs.renamed() == {
        "datalist": "data_list_file_path",
        "dataset_dir": "data_root",
        "device": "train#device",
    }
    # One list serving both sections: an input and its validation twin may share a variable.
    twins = _inputs(root, {"datalist": "data_list_file_path", "val_datalist": "data_list_file_path"})
    assert twins.inputs.val_datalist == twins.inputs.datalist
    # The shipped example parses as documented.
    example = load_task(Path(__file__).parents[1] / "bundles" / "zoo_style.swarm.toml")
    assert example.inputs.datalist == "data_list_file_path" and example.inputs.val_dataset_dir == "data_root"


@pytest.mark.parametrize(
    ("bundle", "message"),
    [
        (3, "[bundle] must be a table"),
        ({"input": {}}, "[bundle]: unknown key(s) input"),
        ({"inputs": "datalist"}, "[bundle.inputs] must be a table"),
        (
            {"inputs": {"data_list": "x"}},
            "[bundle.inputs]: unknown input(s) data_list; swarmd sets datalist,",
        ),
        ({"inputs": {"datalist": 3}}, "[bundle.inputs].datalist must name a bundle config variable"),
        ({"inputs": {"datalist": ""}}, "got ''"),
        ({"inputs": {"datalist": "@data_list"}}, "got '@data_list'"),
        ({"inputs": {"datalist": "data list"}}, "got 'data list'"),
        ({"inputs": {"datalist": "$@x"}}, "got '$@x'"),
        ({"inputs": {"datalist": "train#"}}, "got 'train#'"),
        ({"inputs": {"datalist": {"id": "x"}}}, "must name a bundle config variable"),
        ({"inputs": {"dataset_dir": "bundle_root"}}, "'bundle_root' is set by MONAI's runner itself"),
        ({"inputs": {"datalist": "x", "dataset_dir": "x"}}, "datalist and dataset_dir both set 'x'"),
        ({"inputs": {"device": "x", "amp": "x"}}, "device and amp both set 'x'"),
        ({"inputs": {"datalist": "x", "val_dataset_dir": "x"}}, "datalist and val_dataset_dir both set 'x'"),
    ],
)
def test_bad_bundle_inputs_are_named(root: Path, bundle: object, message: str) -> None:
    assert message in _inputs_error(root, bundle)


def test_bundle_inputs_change_the_hash_and_the_identity_mapping_does_not(root: Path) -> None:
    base = _parse(root).hash
    assert _inputs(root, {}).hash == base
    assert _inputs(root, {"datalist": "datalist", "amp": "amp"}).hash == base  # written out = left out
    mapped = _inputs(root, {"datalist": "data_list_file_path"})
    assert mapped.hash != base
    assert _inputs(root, {"datalist": "data_list"}).hash not in (base, mapped.hash)
    assert b'"bundle_inputs":{"datalist":"data_list_file_path"}' in canonical_task(mapped)
    toml = _write(
        root, '[task]\nname = "demo"\nbundle = "bundle"\n[bundle.inputs]\ndatalist = "data_list_file_path"\n'
    )
    assert load_task(toml).hash == mapped.hash


def test_reveal_window_at_its_default_keeps_the_hash_tasks_had_before_it(root: Path) -> None:
    task = _parse(root)
    assert task.swarm.reveal_window == REVEAL_WINDOW
    assert b"reveal_window" not in canonical_task(task)  # the hash of a task written before the setting
    longer = dataclasses.replace(task, swarm=dataclasses.replace(task.swarm, reveal_window=REVEAL_WINDOW + 1))
    assert b'"reveal_window":11' in canonical_task(longer) and longer.hash != task.hash
    with pytest.raises(TaskError, match="reveal_window"):
        _parse(root, swarm={"reveal_window": 0})


def test_exchange_and_round_sections_default_and_refuse_what_is_not_built(root: Path) -> None:
    task = _parse(root)
    assert (task.exchange.topology, task.exchange.compression, task.round.mode) == ("leader", "none", "swarm")
    written = parse_task(
        {"task": TASK, "exchange": {"topology": "leader", "compression": "none"}, "round": {"mode": "swarm"}},
        root,
    )
    assert written.hash == task.hash  # written out at the defaults = left out: older tasks keep their hash
    assert b"exchange" not in canonical_task(task) and b'"round"' not in canonical_task(task)
    for section, key, value in (("exchange", "topology", "ring"), ("round", "mode", "relay")):
        with pytest.raises(TaskError, match=rf"{section}\.{key} must be one of .*got '{value}'"):
            parse_task({"task": TASK, section: {key: value}}, root)
    with pytest.raises(TaskError, match=r"\[exchange\]: unknown key\(s\) speed"):
        parse_task({"task": TASK, "exchange": {"speed": 1}}, root)
    with pytest.raises(TaskError, match=r"\[round\] must be a table"):
        parse_task({"task": TASK, "round": "cyclic"}, root)
