"""Site data: Decathlon-format datalists and their up-front validation.

A site's datalist is checked completely before any training starts. Every problem in every entry
is collected and reported in one DataError that names each bad file and what is wrong with it
(missing, unreadable, empty, corrupt, wrong channel count, wrong shape), so a bad file never
silently shrinks the data a site trains on.

Decoding the data is the bundle's business. swarmd checks what it can know without the bundle:
every file an entry names exists and can be read; files in a format swarmd reads a header of
(`train.headers`) are not corrupt, and images match the channels and dimensions the bundle's
metadata declares. Targets are whatever the bundle's loss accepts (class indices, floats, lists
for multi-label, a 0/1 for a one-output binary head); swarmd checks only that every entry has one,
that they are all of one kind, and that integer labels index the classes of a classifier with
two or more outputs. The proof that a target fits the loss is one training step.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from swarmd.errors import DataError
from swarmd.train.headers import ImageInfo, inspect_file, inspect_image

MAX_REPORTED = 20  # problems listed in one error message; the count covers all of them


# MONAI's FL client, bundle runner and weight copier log every round at INFO straight to stdout,
# bypassing the daemon's logging; the pydicom plugin probe warns on every reader built without CUDA.
_QUIET = (
    ("monai.fl.client.monai_algo", logging.WARNING),
    ("monai.bundle.workflows", logging.ERROR),
    ("monai.networks.utils", logging.WARNING),
    ("monai.data.nvimgcodec_pydicom_plugin", logging.ERROR),
)


def quiet_monai() -> None:
    """Turn MONAI's per-round chatter down to warnings. Imports first: monai's get_logger()
    resets a module's logger to INFO when that module loads."""
    import monai.bundle.workflows
    import monai.data
    import monai.fl.client.monai_algo
    import monai.networks.utils  # noqa: F401

    for name, level in _QUIET:
        logging.getLogger(name).setLevel(level)
    warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")


@dataclass(frozen=True)
class InputSpec:
    """What a bundle's network expects of an input (from `network_data_format` in its metadata);
    None where the metadata does not say (a tabular or signal input has no image channels)."""

    channels: int | None
    spatial_dims: int | None


class LabelKind(str, Enum):
    """What an entry's `label` is: nothing swarmd checks, a target of the bundle's loss, a mask file."""

    NONE = "none"
    TARGET = "target"
    MASK = "mask"


@dataclass(frozen=True)
class Datalist:
    path: Path
    base_dir: Path
    section: str
    items: tuple[dict[str, Any], ...]  # `image` and every path-like value resolved against base_dir


# A value names a file when its last part has a suffix (`x.npy`, `dir/x.nii.gz`): a letter, then up
# to 7 letters or digits. Class names, ids, numbers ("1.5") and "n/a" do not look like one.
_FILE_NAME = re.compile(r"[^/\\]*[^\s/\\.]\.[A-Za-z][A-Za-z0-9]{0,7}")


def looks_like_path(value: object) -> bool:
    """Whether a datalist value names a file (besides `image`, which always does)."""
    if not isinstance(value, str) or "://" in value or "\n" in value:
        return False
    return _FILE_NAME.fullmatch(re.split(r"[/\\]", value)[-1]) is not None


def _paths(value: object) -> list[str] | None:
    """The path strings of a value that names files (one path or a list of them); None otherwise."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return list(value)
    return None


def load_image(path: Path) -> Any:
    """Load one file exactly as the bundles do (MONAI LoadImage, channel first): a MetaTensor."""
    from monai.transforms import LoadImage

    info = inspect_image(path)
    quiet_monai()
    try:
        return LoadImage(image_only=True, ensure_channel_first=True)(str(info.path))
    except (RuntimeError, OSError, ValueError) as exc:
        raise DataError(f"{path}: cannot be loaded ({exc})") from None


def _parse(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"datalist {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read datalist {path}: {exc}") from None
    except json.JSONDecodeError as exc:
        raise DataError(f"datalist {path} is not valid JSON: {exc}") from None
    except RecursionError:  # json recurses once per nested array or object
        raise DataError(f"datalist {path} is not valid JSON: nested too deeply") from None
    except ValueError as exc:  # an integer past Python's 4300-digit conversion limit
        raise DataError(f"datalist {path} is not valid JSON: {exc}") from None


def read_datalist(path: Path, section: str = "training", base_dir: Path | None = None) -> Datalist:
    """Parse a Decathlon datalist and resolve its paths (relative ones start at `base_dir`,
    by default the datalist's own directory). Structural problems raise DataError."""
    path = Path(path)
    doc = _parse(path)
    if not isinstance(doc, dict):
        raise DataError(f"datalist {path} must be a JSON object with a {section!r} list")
    entries = doc.get(section)
    if not isinstance(entries, list):
        raise DataError(f"datalist {path} has no {section!r} list")
    if not entries:
        raise DataError(f"datalist {path}: {section!r} is empty", hint="a site needs at least one entry")
    base = Path(base_dir) if base_dir is not None else path.parent
    items = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict) or _paths(entry.get("image")) is None:
            raise DataError(
                f"datalist {path}: {section}[{i}] must be an object with an 'image' path (or a list of them)"
            )
        try:
            items.append(_resolve(entry, base))
        except (OSError, ValueError) as exc:  # a NUL in a path, or a name the OS refuses
            raise DataError(
                f"datalist {path}: {section}[{i}] names an unusable path ({str(exc)[:200]})"
            ) from None
    return Datalist(path, base, section, tuple(items))


def _resolve(entry: Mapping[str, Any], base: Path) -> dict[str, Any]:
    out = dict(entry)
    for key, value in entry.items():
        paths = _paths(value)
        if paths is None or (key != "image" and not all(looks_like_path(p) for p in paths)):
            continue
        resolved = [str((base / p).resolve()) for p in paths]
        out[key] = resolved[0] if isinstance(value, str) else resolved
    return out


def _name(entry: Mapping[str, Any]) -> str:
    """How problems name an entry: its (first) image."""
    image = entry["image"]
    return str(image if isinstance(image, str) else image[0])


def _check_file(path: Path) -> tuple[ImageInfo | None, list[str]]:
    try:
        return inspect_file(path), []
    except DataError as exc:
        return None, [str(exc)]


def _check_image(entry: Mapping[str, Any], spec: InputSpec) -> tuple[ImageInfo | None, list[str]]:
    paths = _paths(entry["image"]) or []
    if len(paths) > 1:  # several files stacked by the bundle: each must be readable, no shape to compare
        return None, [p for path in paths for p in _check_file(Path(path))[1]]
    info, problems = _check_file(Path(paths[0]))
    if info is None:
        return None, problems
    if spec.channels is not None and info.channels != spec.channels:
        problems.append(f"{info.path}: {info.channels} channel(s), the bundle expects {spec.channels}")
    if spec.spatial_dims is not None and len(info.spatial_shape) != spec.spatial_dims:
        problems.append(
            f"{info.path}: shape {info.spatial_shape} is {len(info.spatial_shape)}-D, "
            f"the bundle expects {spec.spatial_dims}-D images"
        )
    return info, problems


def _check_mask(entry: Mapping[str, Any], base: Path, image: ImageInfo | None) -> list[str]:
    label = entry.get("label")
    if not isinstance(label, str):
        return [f"{_name(entry)}: segmentation entry needs a 'label' file path, got {label!r}"]
    mask, problems = _check_file(base / label)
    if mask is None or image is None:
        return problems
    if mask.channels != 1:
        return [f"{mask.path}: label mask has {mask.channels} channels, expected 1"]
    if mask.spatial_shape != image.spatial_shape:
        return [
            f"{mask.path}: label shape {mask.spatial_shape} differs from image shape {image.spatial_shape}"
        ]
    return []


def _check_entry(
    entry: Mapping[str, Any], base: Path, spec: InputSpec, kind: LabelKind, class_range: int
) -> list[str]:
    """Problems with one datalist entry (empty list: fine). `class_range` > 0: labels are class indices."""
    image, problems = _check_image(entry, spec)
    for key, value in entry.items():
        if key == "image" or (key == "label" and kind is LabelKind.MASK):
            continue
        paths = _paths(value)
        if paths is not None and all(looks_like_path(p) for p in paths):
            problems += [p for path in paths for p in _check_file(base / path)[1]]
    if kind is LabelKind.MASK:
        problems += _check_mask(entry, base, image)
    elif kind is LabelKind.TARGET:
        label = entry.get("label")
        if label is None:
            problems.append(f"{_name(entry)}: no 'label'")
        elif class_range and not 0 <= label < class_range:
            problems.append(f"{_name(entry)}: label {label!r} is not a class index in [0, {class_range})")
    return problems


def _label_form(label: object) -> str:
    """A label's kind, for the one-kind check: all numbers, all lists of one length, or all text."""
    if isinstance(label, bool | int | float):
        return "number"
    if isinstance(label, list):
        return f"list of {len(label)}"
    if isinstance(label, str):
        return "file" if looks_like_path(label) else "text"
    return type(label).__name__


def _check_targets(items: tuple[dict[str, Any], ...], n_classes: int) -> tuple[int, list[str]]:
    """(class range for integer labels, or 0; problems of the labels taken together)."""
    labels = [e["label"] for e in items if e.get("label") is not None]
    forms = Counter(_label_form(label) for label in labels)
    if len(forms) > 1:
        first: dict[str, dict[str, Any]] = {}
        for entry in items:
            first.setdefault(_label_form(entry.get("label")), entry)
        kinds = "; ".join(f"{form}: {n} (e.g. {_name(first[form])})" for form, n in forms.most_common())
        return 0, [f"labels must all be of one kind (numbers, lists of one length, or text); found {kinds}"]
    # A classifier with 2+ outputs and integer labels is a CrossEntropy head: a label must index a class.
    # A one-output head (BCE, regression) and float or multi-label targets are the loss's to judge.
    integers = bool(labels) and all(isinstance(x, int) and not isinstance(x, bool) for x in labels)
    return (n_classes if integers and n_classes >= 2 else 0), []


def validate_datalist(
    datalist: Datalist,
    spec: InputSpec,
    *,
    label_kind: LabelKind | str = LabelKind.NONE,
    n_classes: int = 0,
    workers: int = 4,
) -> None:
    """Check every entry; raise one DataError listing all problems. `n_classes`: the head's outputs.

    Files are checked on `workers` threads (image decoders and gzip release the GIL); problems
    are reported in datalist order either way.
    """
    from concurrent.futures import ThreadPoolExecutor

    kind = LabelKind(label_kind)
    class_range, together = _check_targets(datalist.items, n_classes) if kind is LabelKind.TARGET else (0, [])

    def check(entry: dict[str, Any]) -> list[str]:
        return _check_entry(entry, datalist.base_dir, spec, kind, class_range)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        per_entry = list(pool.map(check, datalist.items))
    problems = [p for found in per_entry for p in found] + together
    if problems:
        shown = "\n  ".join(problems[:MAX_REPORTED])
        more = f"\n  ... and {len(problems) - MAX_REPORTED} more" if len(problems) > MAX_REPORTED else ""
        raise DataError(
            f"datalist {datalist.path} ({datalist.section}): {len(problems)} problem(s) in "
            f"{len(datalist.items)} entries:\n  {shown}{more}",
            hint="fix or remove these entries; no entry is skipped silently",
        )
