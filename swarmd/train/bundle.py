"""What swarmd reads from a MONAI bundle besides running it: its input spec and its network.

The bundle's `configs/metadata.json` (`network_data_format`) says what the network takes (channels
and spatial dims, where declared) and what it predicts (a segmentation, or any other output: class
scores, one binary logit, several labels, a regression); data validation is checked against that.
The initial weights come from the bundle's `network_def`, built on the CPU from the task seed, so
every site derives the same tensors and the same content hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from swarmd.errors import TaskError
from swarmd.train.data import InputSpec, LabelKind

METADATA = "configs/metadata.json"


@dataclass(frozen=True)
class BundleInfo:
    root: Path
    name: str
    input: InputSpec
    label_kind: LabelKind  # TARGET (whatever the loss takes) or MASK (a label file per entry)
    n_classes: int  # the prediction's channels; 0 when the metadata does not say


def _get(doc: dict[str, Any], path: str, where: Path) -> Any:
    node: Any = doc
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise TaskError(f"{where}: missing {path}", hint="see MONAI's bundle metadata schema")
        node = node[key]
    return node


def _first(section: Any, preferred: str, path: str, where: Path) -> dict[str, Any]:
    """`section[preferred]`, else its only or first entry: bundles name inputs `image`, `ecg`, ..."""
    if not isinstance(section, dict) or not section:
        raise TaskError(
            f"{where}: {path} must name at least one entry", hint="see MONAI's bundle metadata schema"
        )
    node = section.get(preferred, next(iter(section.values())))
    if not isinstance(node, dict):
        raise TaskError(f"{where}: {path} entries must be objects")
    return node


def _count(node: dict[str, Any], key: str, where: Path) -> int | None:
    value = node.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise TaskError(f"{where}: {key} must be a positive integer, got {value!r}")
    return value


def read_bundle_info(bundle: Path) -> BundleInfo:
    """What the bundle's metadata declares about its input and output, for data validation.

    Any input of 1 to 3 spatial dims (a signal or a tabular row is 1-D) and any output format;
    what the metadata leaves out (an input's channels, its shape) is not checked."""
    meta_path = Path(bundle) / METADATA
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError(f"bundle {bundle} has no {METADATA}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TaskError(f"{meta_path}: unreadable bundle metadata: {exc}") from None
    fmt = _get(doc, "network_data_format", meta_path)
    image = _first(_get(fmt, "inputs", meta_path), "image", "network_data_format.inputs", meta_path)
    pred = _first(_get(fmt, "outputs", meta_path), "pred", "network_data_format.outputs", meta_path)
    channels = _count(image, "num_channels", meta_path)
    n_classes = _count(pred, "num_channels", meta_path) or 0
    shape = image.get("spatial_shape")
    if shape is not None and (not isinstance(shape, list) or len(shape) not in (1, 2, 3)):
        raise TaskError(f"{meta_path}: an input's spatial_shape must list 1, 2 or 3 sizes, got {shape!r}")
    dims = len(shape) if shape is not None else None
    label_kind = LabelKind.MASK if pred.get("format") == "segmentation" else LabelKind.TARGET
    name = str(doc.get("name") or Path(bundle).name)
    return BundleInfo(Path(bundle), name, InputSpec(channels, dims), label_kind, n_classes)


def build_network(bundle: Path, config: str = "configs/train.json") -> torch.nn.Module:
    """Instantiate the bundle's `network_def` (on the CPU, with whatever RNG state is current)."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    try:
        parser.read_config(str(Path(bundle) / config))
        if "network_def" not in parser:
            raise TaskError(f"bundle {bundle}: {config} has no network_def")
        net = parser.get_parsed_content("network_def", instantiate=True)
    except TaskError:
        raise
    except (OSError, ValueError, KeyError, RuntimeError, TypeError, AttributeError, ImportError) as exc:
        raise TaskError(f"bundle {bundle}: cannot build network_def from {config}: {exc}") from exc
    if not isinstance(net, torch.nn.Module):
        raise TaskError(f"bundle {bundle}: network_def is a {type(net).__name__}, not a torch module")
    return net
