"""A DICOM file pydicom cannot parse is a named DataError, whatever pydicom raises for it: the fuzzer
(tests/fault/test_fuzz.py) found a garbage value representation in the file meta raising
NotImplementedError ("Unknown Value Representation") from the attribute read."""

from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from swarmd.errors import DataError
from swarmd.train.headers import inspect_image


def test_an_unknown_value_representation_is_a_data_error(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "e.dcm"
    path.write_bytes(b"\0" * 128 + b"DICM")

    def dcmread(*args: object, **kw: object) -> None:
        raise NotImplementedError("Unknown Value Representation '0x55 0xb7' in tag (0002,0010)")

    monkeypatch.setattr(pydicom, "dcmread", dcmread)
    with pytest.raises(DataError, match="corrupt DICOM"):
        inspect_image(path)
