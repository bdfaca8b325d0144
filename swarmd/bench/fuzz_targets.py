"""The fuzz targets: one per boundary where bytes from outside enter swarmd.

A `Target` names the function under test, the strategy that feeds it (near-valid documents and raw
bytes, see `fuzz_inputs`), and the named errors it may raise; anything else is a finding. `TARGETS`
is the registry `swarm bench fuzz` and tests/fault/test_fuzz.py run. A new boundary is one more
builder in `BUILDERS` (`_bulk_header` is the smallest example). `examples` are inputs that once
escaped a boundary; they run first, every time.
"""

from __future__ import annotations

import gzip
import io
import logging
import math
import shutil
import struct
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hypothesis import strategies as st

from swarmd.bench.fuzz_inputs import (
    bytes_mutated,
    document_inputs,
    mutated,
    to_json,
    to_msgpack,
    to_toml,
    values,
)
from swarmd.errors import (
    CheckpointError,
    CodecError,
    ConfigError,
    DataError,
    SwarmError,
    TaskError,
    WireError,
)


@dataclass(frozen=True)
class Target:
    """One boundary under fuzz: `run(input, scratch_dir)` may raise only `allowed` errors."""

    name: str
    boundary: str  # the function under test, as the report names it
    inputs: Callable[[], st.SearchStrategy[Any]]  # built on first use (templates import libraries)
    run: Callable[[Any, Path], object]
    allowed: tuple[type[SwarmError], ...]
    examples: tuple[Any, ...] = ()
    prepare: Callable[[Path], None] = field(default=lambda _: None)  # once per run, in the scratch dir


def _write(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


# --- control frames -------------------------------------------------------------------------------
def _frame_docs() -> list[dict[str, Any]]:
    from swarmd.codec import Manifest, TensorSpec
    from swarmd.transport import messages as m

    manifest = Manifest(
        (TensorSpec("a.bias", "float32", (4,), 16), TensorSpec("a.weight", "int8", (2, 3), 6))
    )
    h, sid = bytes(range(32)), bytes(range(16))
    msgs: list[m.Message] = [
        m.Ping(1, 0.5),
        m.Pong(1, 0.5),
        m.Announce(2, 3, h),
        m.UpdateOffer(3, 1, 0, h, manifest, {"n": 10, "loss": 0.25, "site": "a", "ok": True}),
        m.Fetch(4, h, 1 << 20, h),
        m.Serve(5, sid, manifest, 7701),
        m.Grant(6, sid, 4, h, 7701),
        m.Chunk(sid, 0),
        m.Cancel(sid, "stalled"),
        m.Reply(7, False, m.Refusal.BUSY, "try later"),
        m.Reply(8, True, None, "", bytes(range(m.RECEIPT_BYTES))),  # an acceptance with its receipt
    ]
    return [msg.to_header() for msg in msgs]


def _array_bomb(size: int) -> bytes:
    """A msgpack frame of `size` bytes that is almost only empty arrays (about 56 bytes each decoded)."""
    return (b"\xdc\xff\xff" + (b"\xdc\x00\x40" + b"\x90" * 64) * 65535)[:size]


def _control_frames() -> Target:
    from swarmd.transport.messages import decode

    def inputs() -> st.SearchStrategy[bytes]:
        docs = _frame_docs()
        frames = st.one_of([document_inputs(d, to_msgpack, nest=b"\x91") for d in docs])
        # Now and then a frame of many empty arrays: msgpack's limits cap each container, not the
        # total, so only decode's total object budget keeps such a frame cheap (a 4 MiB one took 10 s
        # and 219 MiB before it had one; it is refused in milliseconds now).
        bomb = st.sampled_from([_array_bomb(n) for n in (64 << 10, 1 << 20, 4 << 20)])
        rare = st.integers(0, 49)
        return st.tuples(rare, bomb, frames).map(lambda t: t[1] if t[0] == 17 else t[2])

    return Target(
        "control_frame", "swarmd.transport.messages.decode", inputs, lambda b, _: decode(b), (WireError,)
    )


def _bulk_header() -> Target:
    from swarmd.transport.bulk import GRANT_SIZE, KIND_GRANT, chunk_head, head, parse

    sid = bytes(range(16))
    valid = [[chunk_head(sid, 7), b"\0" * 32], [head(KIND_GRANT, sid, 9) + b"t" * 16]]

    def inputs() -> st.SearchStrategy[list[bytes]]:
        frame = st.one_of(bytes_mutated(valid[0][0]), st.binary(max_size=GRANT_SIZE + 8))
        return st.one_of(st.sampled_from(valid), st.lists(frame, max_size=3))

    return Target(
        "bulk_header",
        "swarmd.transport.bulk.parse",
        inputs,
        lambda frames, _: parse([memoryview(f) for f in frames]),
        (WireError,),
    )


# --- site.toml ------------------------------------------------------------------------------------
SITE_TOML: dict[str, Any] = {
    "schema": 1,
    "site": {"name": "site-a", "state_dir": "state", "task": "swarm.toml", "data_list": "data/train.json"},
    "identity": {"keystore": "keys/eth.json", "passphrase_file": "keys/pass", "curve_secret": "keys/curve"},
    "chain": {
        "rpc_url": "http://127.0.0.1:8545",
        "contract": "0x" + "ab" * 20,
        "poa": False,
        "poll_interval": 0.5,
    },
    "transport": {"bind": "tcp://0.0.0.0:7700", "endpoint": "tcp://127.0.0.1:7700", "bulk": "aead"},
    "train": {"device": "auto", "amp": False, "threads": 0},
    "metrics": {"bind": ""},
}


def _site_toml() -> Target:
    from swarmd.config import load_config

    def run(data: bytes, scratch: Path) -> object:
        return load_config(_write(scratch / "site.toml", data), env={})

    return Target(
        "site_toml",
        "swarmd.config.load_config",
        lambda: document_inputs(SITE_TOML, to_toml),
        run,
        (ConfigError,),
        examples=(
            b"\xff\xfe",  # not UTF-8
            b"a = " + b"[" * 5000,  # nesting deeper than the parser's recursion
            b"a = " + b"1" * 5000,  # past Python's 4300-digit int conversion limit
            to_toml({**SITE_TOML, "train": {"threads": math.inf}}),
            to_toml({**SITE_TOML, "site": {**SITE_TOML["site"], "state_dir": "a\x00b"}}),
        ),
    )


# --- swarm.toml -----------------------------------------------------------------------------------
SWARM_TOML = {
    "task": {
        "name": "fuzz",
        "bundle": "bundle",
        "train_config": "configs/train.json",
        "eval_config": "configs/evaluate.json",
        "seed": 0,
    },
    "swarm": {
        "rounds": 5,
        "local_steps": 10,
        "min_peers": 2,
        "merge": "fedavg",
        "send": "weights",
        "commit_window": 20,
        "leader_timeout": 30,
        "fanout": 2,
        "admission": "admin",
        "trim_ratio": 0.1,
        "norm_bound": 0.0,
        "max_update_bytes": 1 << 30,
        "eval_every": 1,
    },
}


def _bundle(scratch: Path) -> None:
    configs = scratch / "bundle" / "configs"
    configs.mkdir(parents=True, exist_ok=True)
    for name in ("train.json", "evaluate.json"):
        (configs / name).write_text("{}")


def _swarm_toml() -> Target:
    from swarmd.task import load_task

    def run(data: bytes, scratch: Path) -> object:
        return load_task(_write(scratch / "swarm.toml", data)).hash

    return Target(
        "swarm_toml",
        "swarmd.task.load_task",
        lambda: document_inputs(SWARM_TOML, to_toml),
        run,
        (TaskError,),
        examples=(
            b"\xff\xfe",
            b"a = " + b"[" * 5000,
            b"a = " + b"1" * 5000,
            to_toml({**SWARM_TOML, "task": {**SWARM_TOML["task"], "bundle": "a\x00b"}}),
            to_toml({**SWARM_TOML, "task": {**SWARM_TOML["task"], "train_config": "x" * 300}}),  # too long
        ),
        prepare=_bundle,
    )


# --- datalists and the image files they name ------------------------------------------------------
IMAGE_NAMES = ("a.png", "b.jpg", "c.nii", "d.nii.gz", "e.dcm", "f.txt", "g.png", "h.npy")


def _png(width: int, height: int, depth: int, colour: int, body: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, depth, colour, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(body))
        + chunk(b"IEND", b"")
    )


def _templates() -> dict[str, bytes]:
    """One small valid file per format."""
    import nibabel as nib
    import numpy as np
    from PIL import Image

    out = {}
    for suffix, fmt in ((".png", "PNG"), (".jpg", "JPEG")):
        buf = io.BytesIO()
        Image.new("L", (8, 8)).save(buf, format=fmt)
        out[suffix] = buf.getvalue()
    nii = nib.Nifti1Image(np.zeros((4, 4, 4), dtype=np.float32), np.eye(4)).to_bytes()
    out[".nii"], out[".nii.gz"] = nii, gzip.compress(nii, mtime=0)
    out[".dcm"] = _dicom({})
    out[".txt"] = b"not an image\n"
    npy = io.BytesIO()
    np.save(npy, np.zeros(16, dtype=np.float32))
    out[".npy"] = npy.getvalue()
    return out


DICOM_FIELDS = ("Rows", "Columns", "SamplesPerPixel", "BitsAllocated", "NumberOfFrames", "PixelData")


def _dicom(changes: dict[str, Any]) -> bytes:
    """A small DICOM file; `changes` sets (or, with value `...`, deletes) data elements."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import UID, ExplicitVRLittleEndian, SecondaryCaptureImageStorage

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = UID("1.2.3.4")
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = SecondaryCaptureImageStorage, UID("1.2.3.4")
    ds.Rows = ds.Columns = 8
    ds.SamplesPerPixel, ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 1, 8, 8, 7, 0
    ds.PhotometricInterpretation, ds.PixelData = "MONOCHROME2", bytes(64)
    for name, value in changes.items():
        if value is ...:
            ds.pop(name, None)
        else:
            setattr(ds, name, value)
    buf = io.BytesIO()
    ds.save_as(buf, enforce_file_format=True)
    return buf.getvalue()


def _nifti_header_edit(nii: bytes, offset: int, fmt: str, value: Any, gz: bool) -> bytes:
    out = bytearray(nii)
    struct.pack_into(fmt, out, offset, value)
    return gzip.compress(bytes(out), mtime=0) if gz else bytes(out)


def _file_contents(name: str, templates: dict[str, bytes]) -> st.SearchStrategy[bytes]:
    suffix = ".nii.gz" if name.endswith(".nii.gz") else name[name.rfind(".") :]
    valid = templates[suffix]
    header_fields: list[st.SearchStrategy[bytes]] = []
    dims = st.integers(0, 2**31 - 1) | st.sampled_from((0, 1, 2**16, 2**24))
    if suffix == ".png":
        header_fields.append(
            st.builds(
                _png,
                dims,
                dims,
                st.sampled_from((0, 1, 8, 16, 3)),
                st.sampled_from((0, 2, 3, 4, 6, 7)),
                st.binary(max_size=256),
            )
        )
    if suffix.startswith(".nii"):
        gz, nii = suffix == ".nii.gz", templates[".nii"]
        header_fields += [
            st.builds(
                lambda i, v: _nifti_header_edit(nii, 40 + 2 * i, "<h", v, gz),
                st.integers(0, 7),
                st.integers(-(2**15), 2**15 - 1),
            ),
            st.builds(lambda v: _nifti_header_edit(nii, 70, "<h", v, gz), st.integers(-(2**15), 2**15 - 1)),
            st.builds(lambda v: _nifti_header_edit(nii, 108, "<f", v, gz), st.floats(width=32)),
        ]
    if suffix == ".dcm":
        edit = st.sampled_from(DICOM_FIELDS).flatmap(
            lambda f: st.tuples(st.just(f), st.sampled_from((..., None, 0, 2**16 - 1, b"", bytes(10))))
        )
        header_fields.append(
            st.lists(edit, min_size=1, max_size=3).map(lambda e: _dicom_or_template(dict(e)))
        )
    return st.one_of(st.just(valid), bytes_mutated(valid), st.binary(max_size=512), *header_fields)


def _dicom_or_template(changes: dict[str, Any]) -> bytes:
    try:
        with warnings.catch_warnings():  # pydicom warns about the odd values we mean to write
            warnings.simplefilter("ignore")
            return _dicom(changes)
    except (ValueError, TypeError, OverflowError, OSError, AttributeError, struct.error):  # unwritable
        return b"DICM"


DATALIST = {"training": [{"image": "a.png", "label": 0}, {"image": "e.dcm", "label": "g.png"}]}


def _datalist_cases() -> st.SearchStrategy[tuple[bytes, dict[str, bytes], str, int]]:
    """A datalist (valid, mutated or broken JSON), the files it may name, a label kind and a dimension."""
    templates = _templates()
    contents = {n: _file_contents(n, templates) for n in IMAGE_NAMES}
    label = st.sampled_from(IMAGE_NAMES) | st.integers(-1, 3) | values()
    entry = st.fixed_dictionaries({"image": st.sampled_from(IMAGE_NAMES)}, optional={"label": label})
    docs = st.lists(entry, min_size=1, max_size=4).map(lambda e: {"training": e}) | mutated(DATALIST)
    names = st.lists(st.sampled_from(IMAGE_NAMES), min_size=1, max_size=4, unique=True)

    @st.composite
    def case(draw: st.DrawFn) -> tuple[bytes, dict[str, bytes], str, int]:
        files = {n: draw(contents[n]) for n in draw(names)}
        text = to_json(draw(docs))
        how = draw(st.sampled_from(("as is", "bytes", "deep")))
        data = text if how == "as is" else draw(bytes_mutated(text)) if how == "bytes" else b"[" * 100_000
        return data, files, draw(st.sampled_from(("none", "target", "mask"))), draw(st.sampled_from((2, 3)))

    return case()


def _datalist() -> Target:
    from swarmd.train.data import InputSpec, read_datalist, validate_datalist

    for name in ("nibabel", "nibabel.global"):
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)  # it logs every header it repairs
    templates = _templates()
    nii, dcm = templates[".nii"], templates[".dcm"]

    def run(case: tuple[bytes, dict[str, bytes], str, int], scratch: Path) -> object:
        data, files, label_kind, dims = case
        root = scratch / "case"
        shutil.rmtree(root, ignore_errors=True)
        root.mkdir()
        for name, content in files.items():
            _write(root / name, content)
        with warnings.catch_warnings():  # pydicom warns about every odd header it reads anyway
            warnings.simplefilter("ignore")
            datalist = read_datalist(_write(root / "datalist.json", data))
            validate_datalist(datalist, InputSpec(1, dims), label_kind=label_kind, n_classes=2, workers=1)
        return datalist

    return Target(
        "datalist",
        "swarmd.train.data.read_datalist + validate_datalist",
        _datalist_cases,
        run,
        (DataError,),
        examples=(
            (b"[" * 100_000, {}, "none", 2),
            (b"1" * 5000, {}, "none", 2),
            (b'{"training": [{"image": "a\\u0000b"}]}', {}, "none", 2),
            (to_json(DATALIST), {"a.png": b"", "e.dcm": _dicom({"Rows": None})}, "mask", 2),
            (to_json(DATALIST), {"a.png": _png(60_000, 60_000, 8, 0, b"")}, "target", 2),  # PIL's bomb
            (
                b'{"training": [{"image": "c.nii"}]}',
                {"c.nii": _nifti_header_edit(nii, 70, "<h", 108, False)},
                "none",
                3,
            ),
            (to_json({"training": [{"image": "x" * 300 + ".png"}]}), {}, "none", 2),  # name too long
            (
                b'{"training": [{"image": "d.nii.gz"}]}',
                {"d.nii.gz": _nifti_header_edit(nii, 108, "<f", math.inf, True)},
                "none",
                3,
            ),
            (
                b'{"training": [{"image": "e.dcm"}]}',
                {"e.dcm": dcm.replace(b"US\x02\x00\x08\x00", b"US\x03\x00\x08\x00\x00", 1)},
                "none",
                2,
            ),
        ),
    )


# --- checkpoint files -----------------------------------------------------------------------------
CHECKPOINT_HEADER = {
    "__metadata__": {"format": "pt", "producer": "swarmd"},
    "a.bias": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]},
    "a.weight": {"dtype": "F32", "shape": [2, 2], "data_offsets": [8, 24]},
}


def _safetensors(header: Any, data: bytes, length: int | None = None) -> bytes:
    raw = to_json(header)
    return struct.pack("<Q", len(raw) if length is None else length) + raw + data


def _checkpoint_cases() -> st.SearchStrategy[tuple[bytes, bytes | None]]:
    """A safetensors file (mutated header, broken bytes or random), and the hash it should have."""
    structured = st.builds(
        _safetensors,
        mutated(CHECKPOINT_HEADER),
        st.binary(max_size=64) | st.just(bytes(24)),
        st.none() | st.integers(0, 2**64 - 1),
    )
    valid = _safetensors(CHECKPOINT_HEADER, bytes(24))
    files = st.one_of(structured, bytes_mutated(valid, nest=b"{"), st.binary(max_size=512))
    return st.tuples(files, st.none() | st.binary(min_size=32, max_size=32))


def _checkpoint() -> Target:
    from swarmd.checkpoint import load_file

    def run(case: tuple[bytes, bytes | None], scratch: Path) -> object:
        data, expected = case
        return load_file(_write(scratch / "model.safetensors", data), expected=expected)

    return Target("checkpoint", "swarmd.checkpoint.load_file", _checkpoint_cases, run, (CheckpointError,))


# --- the codec's manifest -------------------------------------------------------------------------
MANIFEST = [
    {"name": "a.bias", "dtype": "float32", "shape": [4], "nbytes": 16},
    {"name": "a.weight", "dtype": "int8", "shape": [2, 3], "nbytes": 6},
    {"name": "b", "dtype": "bfloat16", "shape": [], "nbytes": 2},
]


def _unpacked(data: bytes) -> Any:
    """What the control channel would hand the codec for these bytes (or the bytes themselves)."""
    import msgpack

    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=False, max_array_len=100_000, max_map_len=64)
    except (ValueError, TypeError, msgpack.UnpackException):
        return data


def _manifest() -> Target:
    from swarmd.codec import Manifest

    def run(obj: Any, _: Path) -> object:
        return Manifest.from_wire(obj).total_nbytes

    def inputs() -> st.SearchStrategy[Any]:
        return st.one_of(
            mutated(MANIFEST), values(), document_inputs(MANIFEST, to_msgpack, b"\x91").map(_unpacked)
        )

    return Target("manifest", "swarmd.codec.Manifest.from_wire", inputs, run, (CodecError,))


BUILDERS: dict[str, Callable[[], Target]] = {
    "control_frame": _control_frames,
    "bulk_header": _bulk_header,
    "site_toml": _site_toml,
    "swarm_toml": _swarm_toml,
    "datalist": _datalist,
    "checkpoint": _checkpoint,
    "manifest": _manifest,
}
TARGETS = tuple(BUILDERS)


def target(name: str) -> Target:
    """The target of that name (its module imports happen here, not at import of this module)."""
    try:
        return BUILDERS[name]()
    except KeyError:
        raise KeyError(f"no fuzz target {name!r}; known: {', '.join(TARGETS)}") from None
