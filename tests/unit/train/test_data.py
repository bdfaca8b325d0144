"""Image inspection and datalist validation on real files: the NIfTI and DICOM test files shipped in
the nibabel and pydicom wheels, PNGs we write, and deliberately broken copies of them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from nibabel.testing import data_path as nibabel_data
from PIL import Image
from pydicom.data import get_testdata_file

from swarmd.errors import DataError
from swarmd.train import BundleTrainer, inspect_image, load_image, read_datalist, validate_datalist
from swarmd.train.bundle import read_bundle_info
from swarmd.train.data import InputSpec

NIFTI_3D = Path(nibabel_data) / "anatomical.nii"
NIFTI_4D = Path(nibabel_data) / "example4d.nii.gz"
CT_DICOM = Path(get_testdata_file("CT_small.dcm"))
SPEC_2D = InputSpec(channels=1, spatial_dims=2)


def test_real_nifti_files_from_the_nibabel_wheel():
    info = inspect_image(NIFTI_3D)
    assert (info.kind, info.channels, info.spatial_shape) == ("nifti", 1, (33, 41, 25))
    assert tuple(load_image(NIFTI_3D).shape) == (1, 33, 41, 25)
    info4 = inspect_image(NIFTI_4D)  # a 4-D series: MONAI reads the last axis as channels
    assert (info4.channels, info4.spatial_shape) == (2, (128, 96, 24))
    assert tuple(load_image(NIFTI_4D).shape) == (2, 128, 96, 24)


def test_real_dicom_file_from_the_pydicom_wheel():
    info = inspect_image(CT_DICOM)
    assert (info.kind, info.channels, info.spatial_shape) == ("dicom", 1, (128, 128))
    image = load_image(CT_DICOM)
    assert tuple(image.shape) == (1, 128, 128)
    assert float(image.std()) > 0  # real pixel data, not an empty array


def _png(path: Path, mode: str = "L", size: tuple[int, int] = (16, 12)) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new(mode, size, color=100 if mode == "L" else (100, 50, 20)).save(path)
    return path


def _datalist(tmp_path: Path, entries: list[dict[str, object]], section: str = "training") -> Path:
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({section: entries}))
    return path


def test_every_bad_entry_is_reported_by_name_and_none_is_dropped(tmp_path):
    good = _png(tmp_path / "img/good.png")
    truncated = _png(tmp_path / "img/truncated.png", size=(64, 64))
    truncated.write_bytes(truncated.read_bytes()[:60])
    rgb = _png(tmp_path / "img/rgb.png", mode="RGB")
    volume = tmp_path / "img/volume.nii"
    shutil.copy(NIFTI_3D, volume)
    not_image = tmp_path / "img/notes.png"
    not_image.write_text("this is not a PNG")
    entries = [
        {"image": "img/good.png", "label": 0},
        {"image": "img/missing.png", "label": 1},
        {"image": "img/truncated.png", "label": 0},
        {"image": "img/rgb.png", "label": 1},
        {"image": "img/volume.nii", "label": 0},
        {"image": "img/notes.png", "label": 0},
        {"image": "img/good.png", "label": 7},
    ]
    datalist = read_datalist(_datalist(tmp_path, entries))
    with pytest.raises(DataError) as err:
        validate_datalist(datalist, SPEC_2D, label_kind="target", n_classes=2)
    message = str(err.value)
    assert "6 problem(s) in 7 entries" in message
    assert f"{tmp_path / 'img/missing.png'}: file does not exist" in message
    assert f"{truncated}: corrupt or unreadable image" in message
    assert f"{rgb}: 3 channel(s), the bundle expects 1" in message
    assert f"{volume}: shape (33, 41, 25) is 3-D, the bundle expects 2-D" in message
    assert f"{not_image}: corrupt or unreadable image" in message
    assert "label 7 is not a class index in [0, 2)" in message
    assert str(good) in message  # the bad label is reported against the good image's entry


def test_truncated_and_corrupt_nifti_and_dicom(tmp_path):
    nii = tmp_path / "cut.nii"
    nii.write_bytes(NIFTI_3D.read_bytes()[:2000])
    with pytest.raises(DataError, match=r"cut\.nii: truncated NIfTI"):
        inspect_image(nii)
    gz = tmp_path / "cut.nii.gz"
    gz.write_bytes(NIFTI_4D.read_bytes()[:5000])
    with pytest.raises(DataError, match=r"cut\.nii\.gz: corrupt or unreadable NIfTI"):
        inspect_image(gz)
    dcm = tmp_path / "cut.dcm"
    dcm.write_bytes(CT_DICOM.read_bytes()[:-4000])
    with pytest.raises(DataError, match=r"cut\.dcm: (truncated|corrupt) DICOM"):
        inspect_image(dcm)
    with pytest.raises(DataError, match=r"unsupported image format '\.txt'"):
        inspect_image(_png(tmp_path / "x.png").rename(tmp_path / "x.txt"))


def test_segmentation_mask_must_match_its_image(tmp_path):
    img = np.zeros((8, 8, 8), dtype=np.float32)
    nib.save(nib.Nifti1Image(img, np.eye(4)), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(np.zeros((8, 8, 6), dtype=np.uint8), np.eye(4)), tmp_path / "mask.nii.gz")
    datalist = read_datalist(_datalist(tmp_path, [{"image": "img.nii.gz", "label": "mask.nii.gz"}]))
    with pytest.raises(DataError, match=r"label shape \(8, 8, 6\) differs from image shape \(8, 8, 8\)"):
        validate_datalist(datalist, InputSpec(1, 3), label_kind="mask")


def test_empty_or_malformed_datalists(tmp_path):
    with pytest.raises(DataError, match="'training' is empty"):
        read_datalist(_datalist(tmp_path, []))
    with pytest.raises(DataError, match="has no 'validation' list"):
        read_datalist(_datalist(tmp_path, [{"image": "a.png"}]), "validation")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        read_datalist(bad)
    with pytest.raises(DataError, match=r"training\[0\] must be an object with an 'image' path"):
        read_datalist(_datalist(tmp_path, [{"img": "a.png"}]))


def test_bundle_metadata_drives_validation(cls_task, seg_task):
    cls = read_bundle_info(cls_task.bundle)
    seg = read_bundle_info(seg_task.bundle)
    assert (cls.input, cls.label_kind, cls.n_classes) == (InputSpec(1, 2), "target", 2)
    assert (seg.input, seg.label_kind, seg.n_classes) == (InputSpec(1, 3), "mask", 2)


def test_trainer_refuses_a_site_with_one_bad_file(cls_task, demo_classification, tmp_path):
    src = demo_classification.site_datalists[0]
    site = tmp_path / "site"
    shutil.copytree(src.parent, site)
    victim = site / "images" / Path(read_datalist(src).items[3]["image"]).name
    victim.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\x00" * 10)
    trainer = BundleTrainer(cls_task, site / "datalist.json", workdir=tmp_path / "work")
    with pytest.raises(DataError, match=rf"(?s)1 problem\(s\) in 10 entries.*{victim}: corrupt"):
        trainer.initialize()
