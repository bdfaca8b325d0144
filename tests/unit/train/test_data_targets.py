"""Data files are the bundle's business and any target its loss takes works: swarmd checks only that
every named file can be read (and is not corrupt where it knows the format), and that the labels
are there and of one kind. Real files throughout; one entry names /proc/self/mem, a regular file
that no one, root included, can read from its first byte."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from swarmd.errors import DataError, TaskError
from swarmd.train import BUNDLES_DIR, read_datalist, validate_datalist
from swarmd.train.bundle import read_bundle_info
from swarmd.train.data import InputSpec, LabelKind, looks_like_path

SIGNAL = InputSpec(channels=1, spatial_dims=1)


def _datalist(root: Path, entries: list[dict[str, object]]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    path = root / "datalist.json"
    path.write_text(json.dumps({"training": entries}))
    return path


def _npy(path: Path, value: float = 0.0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.full(32, value, dtype=np.float32))
    return path.name


def _check(path: Path, spec: InputSpec = SIGNAL, n_classes: int = 1, kind: str = "target") -> None:
    validate_datalist(read_datalist(path), spec, label_kind=kind, n_classes=n_classes, workers=2)


def _problems(path: Path, **kw: object) -> str:
    with pytest.raises(DataError) as err:
        _check(path, **kw)  # type: ignore[arg-type]
    return str(err.value)


def test_npy_and_an_unknown_format_are_accepted(tmp_path):
    """The .npy refusal is gone, and a format swarmd cannot read is left to the bundle's transforms."""
    _npy(tmp_path / "a.npy")
    (tmp_path / "b.edf").write_bytes(b"0       patient x recording y")
    (tmp_path / "c").write_bytes(b"\x00\x01")  # no suffix at all
    entries = [{"image": "a.npy", "label": 0}, {"image": "b.edf", "label": 1}, {"image": "c", "label": 1}]
    _check(_datalist(tmp_path, entries))


def test_missing_unreadable_empty_and_corrupt_files_are_all_listed(tmp_path):
    good = _npy(tmp_path / "good.npy")
    (tmp_path / "empty.csv").write_bytes(b"")
    (tmp_path / "cut.npy").write_bytes((tmp_path / "good.npy").read_bytes()[:-40])
    (tmp_path / "folder.npy").mkdir()
    entries = [
        {"image": good, "label": 0, "patient": "p-0007", "note": "n/a"},  # no file named: fine
        {"image": "missing.npy", "label": 1},
        {"image": "/proc/self/mem", "label": 0},
        {"image": "empty.csv", "label": 1},
        {"image": "cut.npy", "label": 0},
        {"image": "folder.npy", "label": 0},
        {"image": good, "label": 1, "aux": "extra/lead2.npy"},  # any key that names a file is checked
        {"image": [good, "channels/missing.npy"], "label": 0},  # so is each file of a list
    ]
    message = _problems(_datalist(tmp_path, entries))
    assert "7 problem(s) in 8 entries" in message
    assert f"{tmp_path / 'missing.npy'}: file does not exist" in message
    assert "/mem: cannot be read (Input/output error)" in message
    assert f"{tmp_path / 'empty.csv'}: file is empty" in message
    assert f"{tmp_path / 'cut.npy'}: truncated .npy" in message
    assert f"{tmp_path / 'folder.npy'}: not a regular file" in message
    assert f"{tmp_path / 'extra/lead2.npy'}: file does not exist" in message
    assert f"{tmp_path / 'channels/missing.npy'}: file does not exist" in message


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its mode")
def test_a_file_without_read_permission_is_unreadable(tmp_path):
    _npy(tmp_path / "locked.npy")
    (tmp_path / "locked.npy").chmod(0)
    message = _problems(_datalist(tmp_path, [{"image": "locked.npy", "label": 0}]))
    assert "locked.npy: cannot be read (Permission denied)" in message


@pytest.mark.parametrize(
    ("labels", "n_classes"),
    [
        ([0, 1, 1, 0], 1),  # one-output binary head (BCE): once "label 1 is not a class index in [0, 1)"
        ([0.25, 1.5, -3.0, 2], 1),  # regression
        ([[0, 1, 1], [1, 0, 0], [0, 0, 0], [1, 1, 1]], 3),  # multi-label
        ([0.0, 1.0, 0.7, 0.3], 2),  # soft or float targets on a 2-output head: the loss decides
        (["normal", "afib", "normal", "flutter"], 0),  # text a bundle transform maps to a target
    ],
)
def test_any_target_the_loss_may_take_is_accepted(tmp_path, labels, n_classes):
    entries = [{"image": _npy(tmp_path / f"x{i}.npy"), "label": y} for i, y in enumerate(labels)]
    _check(_datalist(tmp_path, entries), n_classes=n_classes)


def test_labels_must_be_there_and_all_of_one_kind(tmp_path):
    _npy(tmp_path / "x.npy")
    x = str(tmp_path / "x.npy")
    mixed = [{"image": x, "label": 0}, {"image": x, "label": [1, 0]}, {"image": x, "label": [1, 0, 1]}]
    message = _problems(_datalist(tmp_path / "mixed", [*mixed, {"image": x, "label": [0, 1]}]), n_classes=2)
    assert "labels must all be of one kind" in message
    assert "list of 2: 2" in message and "list of 3: 1" in message and "number: 1" in message
    assert "1 problem(s) in 4 entries" in message
    missing = [{"image": x, "label": 1}, {"image": x}, {"image": x, "label": None}]
    message = _problems(_datalist(tmp_path / "missing", missing))
    assert "2 problem(s) in 3 entries" in message and message.count("no 'label'") == 2


def test_integer_labels_of_a_cross_entropy_classifier_must_index_its_classes(tmp_path):
    x = _npy(tmp_path / "x.npy")
    entries = [{"image": x, "label": y} for y in (0, 1, 2, -1, 1)]
    message = _problems(_datalist(tmp_path, entries), n_classes=2)
    assert "2 problem(s) in 5 entries" in message
    assert "label 2 is not a class index in [0, 2)" in message
    assert "label -1 is not a class index in [0, 2)" in message
    wider = _problems(_datalist(tmp_path, entries), n_classes=4)  # takes label 2, never -1
    assert "1 problem(s) in 5 entries" in wider and "label -1 is not a class index in [0, 4)" in wider


def test_segmentation_masks_are_files_in_any_format(tmp_path):
    image = _npy(tmp_path / "vol.npy")
    (tmp_path / "mask.raw").write_bytes(b"\x01\x00")
    entries = [{"image": image, "label": "mask.raw"}, {"image": image, "label": "gone.nii.gz"}]
    message = _problems(_datalist(tmp_path, entries), spec=InputSpec(1, 3), kind="mask")
    assert "1 problem(s) in 2 entries" in message
    assert f"{tmp_path / 'gone.nii.gz'}: file does not exist" in message


def test_image_shape_checks_apply_only_where_metadata_declares_them(tmp_path):
    Image.new("RGB", (8, 6)).save(tmp_path / "rgb.png")
    path = _datalist(tmp_path, [{"image": "rgb.png", "label": 0}])
    assert "3 channel(s), the bundle expects 1" in _problems(path, spec=InputSpec(1, 2))
    _check(path, spec=InputSpec(None, None))  # a bundle that declares neither: not checked


def test_what_counts_as_a_file_name():
    for value in ("a.npy", "dir/x.nii.gz", "../data/ecg 7.csv", "C:\\data\\x.dcm"):
        assert looks_like_path(value), value
    for value in ("normal", "n/a", "1.5", "v1.2.3", "Dr. Smith", "http://x.org/a.png", ".hidden", 3):
        assert not looks_like_path(value), value


def test_bundle_metadata_of_1d_and_tabular_inputs_and_any_output(tmp_path):
    ecg = read_bundle_info(BUNDLES_DIR / "ecg_densenet")
    assert (ecg.input, ecg.label_kind, ecg.n_classes) == (InputSpec(1, 1), LabelKind.TARGET, 1)

    def info(fmt: dict[str, object]) -> object:
        (tmp_path / "configs").mkdir(exist_ok=True)
        (tmp_path / "configs/metadata.json").write_text(json.dumps({"network_data_format": fmt}))
        return read_bundle_info(tmp_path)

    # a tabular row: an input named by the bundle, no channels or shape; a regression output
    tabular = info(
        {"inputs": {"features": {"type": "tabular"}}, "outputs": {"risk": {"format": "regression"}}}
    )
    assert (tabular.input, tabular.label_kind, tabular.n_classes) == (InputSpec(None, None), "target", 0)
    with pytest.raises(TaskError, match="1, 2 or 3 sizes"):
        info({"inputs": {"image": {"spatial_shape": [2, 2, 2, 2]}}, "outputs": {"pred": {}}})
    with pytest.raises(TaskError, match="num_channels must be a positive integer"):
        info({"inputs": {"image": {"num_channels": 0}}, "outputs": {"pred": {}}})
    with pytest.raises(TaskError, match="outputs must name at least one entry"):
        info({"inputs": {"image": {}}, "outputs": {}})
