"""`--data SITE=DATALIST` and `--test-data` as `swarm devnet up | run` take them: every list is checked
before anything is deployed, and each problem is a named error that names the site (or --test-data);
and which task and generated data the other options choose."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swarmd.errors import DataError, UsageError
from swarmd.ops import DemoData, OwnData, devnet_data, own_data
from swarmd.ops.sitedata import parse_data_specs
from swarmd.train import example_task_file


def datalist(folder: Path, *, n: int = 3, validation: bool = True, missing: int = 0) -> Path:
    """A datalist with `n` training entries whose files exist (the last `missing` ones do not)."""
    folder.mkdir(parents=True, exist_ok=True)
    entries = []
    for i in range(n):
        name = f"img{i}.png"
        if i < n - missing:
            (folder / name).write_bytes(b"not decoded here")
        entries.append({"image": name, "label": i % 2})
    doc: dict[str, object] = {"training": entries}
    if validation:
        doc["validation"] = entries[:1]
    path = folder / "datalist.json"
    path.write_text(json.dumps(doc))
    return path


def test_site_equals_path_gives_named_sites_in_order(tmp_path):
    a, b = datalist(tmp_path / "a"), datalist(tmp_path / "b")
    data = own_data([f"st-marys={a}", f"kings.2={b}"])
    assert isinstance(data, OwnData) and data.sites == 2
    assert list(data.datalists.items()) == [("st-marys", a.resolve()), ("kings.2", b.resolve())]
    assert data.test is None


@pytest.mark.parametrize(
    ("spec", "why"),
    [
        ("st-marys", "is not SITE=DATALIST"),
        ("=x.json", "is not SITE=DATALIST"),
        ("st-marys=", "is not SITE=DATALIST"),
        ("st/marys=x.json", "is not usable"),
        ("-lead=x.json", "is not usable"),
    ],
)
def test_a_malformed_spec_is_a_usage_error(spec, why):
    with pytest.raises(UsageError, match=why):
        parse_data_specs([spec])


def test_a_site_named_twice_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError, match="names site 'a' twice"):
        parse_data_specs(["a=x.json", "b=y.json", "a=z.json"])


def test_a_missing_datalist_names_its_site(tmp_path):
    good = datalist(tmp_path / "a")
    with pytest.raises(DataError, match=r"--data b: datalist .*nope.json does not exist"):
        own_data([f"a={good}", f"b={tmp_path / 'nope.json'}"])


def test_a_bad_datalist_names_its_site(tmp_path):
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match=r"--data b: datalist .* is not valid JSON"):
        own_data([f"a={datalist(tmp_path / 'a')}", f"b={tmp_path / 'bad.json'}"])
    (tmp_path / "empty.json").write_text(json.dumps({"training": []}))
    with pytest.raises(DataError, match=r"--data c: .*'training' is empty"):
        own_data([f"c={tmp_path / 'empty.json'}"])


def test_a_datalist_naming_missing_files_names_them(tmp_path):
    bad = datalist(tmp_path / "b", n=4, missing=2)
    with pytest.raises(DataError, match=r"--data b: .*2 missing file\(s\): training\[2\]\.image: .*img2.png"):
        own_data([f"b={bad}"])


def test_without_test_data_each_list_needs_a_validation_section(tmp_path):
    bare = datalist(tmp_path / "a", validation=False)
    with pytest.raises(DataError, match=r"--data a: .*no 'validation' list") as err:
        own_data([f"a={bare}"])
    assert "--test-data" in str(err.value)
    test = datalist(tmp_path / "test")
    assert own_data([f"a={bare}"], test).test == test.resolve()
    with pytest.raises(DataError, match=r"--test-data: .*does not exist"):
        own_data([f"a={bare}"], tmp_path / "none.json")


def test_named_example_tasks_bring_their_generated_data():
    path, data = devnet_data("segmentation", n_per_site=4, n_test=2)
    assert path == example_task_file("tumor_unet")
    assert data == DemoData(0.5, 0, 4, 2, task="segmentation")
    path, data = devnet_data(None, sites=2)
    assert path == example_task_file("cxr_densenet") and isinstance(data, DemoData)
    assert data.task == "classification" and data.n_per_site == DemoData().n_per_site


def test_a_task_file_takes_the_data_kind_its_bundle_fits(tmp_path):
    seg = str(example_task_file("tumor_unet"))
    assert devnet_data(seg, data_kind="segmentation")[1].task == "segmentation"  # type: ignore[union-attr]
    with pytest.raises(UsageError, match="generated classification data is 1-channel 2-D") as err:
        devnet_data(seg)
    assert "--data-kind segmentation" in str(err.value)


@pytest.mark.parametrize(
    ("task", "options", "why"),
    [
        ("segmentation", {"data_kind": "classification"}, "does not fit the example task"),
        ("nowhere.toml", {}, "no such file"),
        (None, {"test_data": Path("t.json")}, "--test-data goes with --data"),
        (None, {"data_kind": "audio"}, "does not fit the example task"),
    ],
)
def test_contradicting_options_are_usage_errors(task, options, why):
    with pytest.raises(UsageError, match=why):
        devnet_data(task, **options)


def test_sites_must_agree_with_the_data_given(tmp_path):
    a = datalist(tmp_path / "a")
    with pytest.raises(UsageError, match="--sites 3 but 1 --data lists"):
        devnet_data(None, data=[f"a={a}"], sites=3)
    assert devnet_data(None, data=[f"a={a}"], sites=1)[1] == OwnData({"a": a.resolve()})
