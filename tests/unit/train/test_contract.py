"""The bundle contract on real bundles and generated files: a bundle that reads its data through a
variable of its own is refused by name and by count (the silent mismatch: it would train on its 2
default items while swarmd reports the site's 10), and runs once `[bundle.inputs]` maps it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from swarmd.errors import TaskError
from swarmd.task import Task, load_task
from swarmd.train import BundleTrainer, example_task_file, initial_weights
from swarmd.train.check import check_task
from swarmd.train.contract import BundleMismatch, check_names, reached, reads

ZOO = Path(__file__).parents[2] / "bundles" / "zoo_style"
MAPPED = load_task(ZOO.parent / "zoo_style.swarm.toml").inputs.renamed()  # the documented example's mapping
TRAIN_DATA = "'training', base_dir=@data_root)"
VAL_DATA = "'validation', base_dir=@data_root)"


def zoo_task(tmp: Path, inputs: dict[str, str], bundle: Path = ZOO) -> Task:
    lines = ["[task]", 'name = "zoo"', f"bundle = {json.dumps(str(bundle))}", "[bundle.inputs]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in inputs.items()]
    path = tmp / "swarm.toml"
    path.write_text("\n".join([*lines, "[swarm]", "local_steps = 1", ""]))
    return load_task(path)


def edited_zoo(tmp: Path, old: str, new: str) -> Path:
    """A copy of the zoo-style bundle with one edit to its train.json."""
    bundle = tmp / "zoo_edited"
    shutil.copytree(ZOO, bundle)
    train = bundle / "configs" / "train.json"
    text = train.read_text()
    assert old in text
    train.write_text(text.replace(old, new))
    return bundle


def initialized(task: Task, data_list: Path, tmp: Path) -> BundleTrainer:
    trainer = BundleTrainer(task, data_list, device="cpu", threads=1, workdir=tmp / "work")
    trainer.initialize()
    return trainer


def refusal(task: Task, data_list: Path, tmp: Path) -> str:
    with pytest.raises(BundleMismatch) as exc:
        initialized(task, data_list, tmp)
    assert isinstance(exc.value, TaskError) and exc.value.exit_code == 2
    return str(exc.value)


def test_reached_follows_references_macros_expressions_and_relative_ids(tmp_path: Path) -> None:
    from monai.bundle import ConfigParser

    config = {
        "root": {"one": "@a", "two": "%d", "three": "@nest", "text": "mail@h is not a reference"},
        "a": "$@b + 1",
        "b": "@c",
        "c": 3,
        "d": "$@e.upper()",
        "e": "x",
        "nest": {"x": "@##f", "y": "$len(@g#0)"},
        "f": 1,
        "g": [[1]],
        "h": 2,
        "unused": "@h",
    }
    parser = ConfigParser(config)
    seen = reached(parser, "root")
    assert {"root", "a", "b", "c", "d", "e", "nest", "f", "g::0"} <= seen
    assert "h" not in seen and "unused" not in seen
    assert reads(seen, "c") and reads(seen, "g") and reads(seen, "nest#x")  # the item, around it, inside it
    assert not reads(seen, "h") and not reads(seen, "unused")


@pytest.mark.parametrize("bundle", ["cxr_densenet", "tumor_unet"])
def test_the_shipped_bundles_read_every_input_swarmd_sets(bundle: str, demo_classification) -> None:
    task = load_task(example_task_file(bundle))
    overrides = {var: "set by swarmd" for _, var in task.inputs.items()}
    found = check_names(task, overrides, [demo_classification.site_datalists[0]])
    assert found.problems == () and found.warnings == () and found.suggestion == ()


def test_without_the_mapping_a_zoo_bundle_is_refused_naming_its_own_variable(demo_classification, tmp_path):
    """The silent mismatch: the bundle would build and train on the 2 items of its own default list."""
    site = demo_classification.sites[0]
    message = refusal(zoo_task(tmp_path, {}), site.datalist, tmp_path)
    assert "train#trainer never reads `datalist`" in message
    assert "reads its data through data_list_file_path, data_root" in message
    assert (
        f"the bundle loads 2 training items, but the site's datalist {site.datalist} has {site.n_train}"
        in message
    )
    assert "validate#evaluator never reads `val_datalist`" in message
    for line in (
        'datalist = "data_list_file_path"',
        'dataset_dir = "data_root"',
        'val_datalist = "data_list_file_path"',
    ):
        assert f"\n  {line}" in message  # the [bundle.inputs] lines that fix it
    assert "[bundle.inputs]" in message


def test_with_the_mapping_the_zoo_bundle_trains_and_evaluates_on_the_sites_data(
    demo_classification, tmp_path
):
    site = demo_classification.sites[0]
    report = check_task(
        zoo_task(tmp_path, MAPPED),
        site.datalist,
        eval_list=demo_classification.test_datalist,
        steps=2,
        threads=1,
    )
    assert report.bundle == "zoo_style" and report.network == "Classifier" and report.parameters == 9988
    assert report.n_train == site.n_train == 10  # the fedavg weight: the site's items, not the bundle's 2
    assert report.n_val == 8 and report.eval_list == demo_classification.test_datalist.resolve()
    assert report.steps == 2 and report.loss > 0
    assert set(report.metrics) == {"val_auc"} and 0.0 <= report.metrics["val_auc"] <= 1.0
    assert report.warnings == ("the bundle never reads `amp` (mixed precision on CUDA): it chooses its own",)


def test_a_bundle_that_loads_fewer_items_than_the_datalist_is_refused_by_count(demo_classification, tmp_path):
    bundle = edited_zoo(tmp_path, TRAIN_DATA, TRAIN_DATA + "[:4]")
    site = demo_classification.sites[0]
    message = refusal(zoo_task(tmp_path, MAPPED, bundle), site.datalist, tmp_path)
    assert f"the bundle loads 4 training items, but the site's datalist {site.datalist} has 10" in message
    assert "the fedavg weight would be 10 for a model trained on 4" in message
    assert "never reads" not in message  # every variable is read; only the count is wrong


def test_an_evaluator_that_skips_items_is_refused_at_its_first_evaluation(demo_classification, tmp_path):
    bundle = edited_zoo(tmp_path, VAL_DATA, VAL_DATA + "[:1]")
    trainer = initialized(zoo_task(tmp_path, MAPPED, bundle), demo_classification.site_datalists[0], tmp_path)
    try:
        weights = trainer.train(initial_weights(trainer.task), round=0).weights
        test = demo_classification.test_datalist
        with pytest.raises(BundleMismatch) as exc:
            trainer.evaluate(weights, test)
        assert f"the bundle evaluates 1 items, but {test.resolve()} has 8 'validation' entries" in str(
            exc.value
        )
    finally:
        trainer.finalize()


def test_relative_paths_need_the_dataset_dir_and_absolute_ones_do_not(demo_classification, tmp_path):
    lists_only = {"datalist": "data_list_file_path", "val_datalist": "data_list_file_path"}
    site = demo_classification.sites[0]
    message = refusal(zoo_task(tmp_path, lists_only), site.datalist, tmp_path)
    assert "train#trainer never reads `dataset_dir`" in message
    assert "and the bundle then failed" in message  # it looked for the site's images under its own data/
    assert 'dataset_dir = "data_root"' in message
    doc = json.loads(site.datalist.read_text())
    for entry in doc["training"] + doc["validation"]:
        entry["image"] = str(site.datalist.parent / entry["image"])
    absolute = tmp_path / "absolute.json"
    absolute.write_text(json.dumps(doc))
    trainer = initialized(zoo_task(tmp_path, lists_only), absolute, tmp_path)
    assert trainer.n_train == site.n_train
    trainer.finalize()


def test_a_nested_mapping_is_read_and_one_onto_a_missing_item_is_named(tmp_path: Path) -> None:
    task = zoo_task(tmp_path, {**MAPPED, "device": "train#trainer#device", "amp": "nothere#amp"})
    found = check_names(task, {var: "set by swarmd" for _, var in task.inputs.items()}, [])
    assert found.problems == ("`nothere#amp` cannot be set: the bundle has no item to hold it",)
    assert found.warnings == (
        "the bundle never reads `nothere#amp` (mixed precision on CUDA): it chooses its own",
    )
