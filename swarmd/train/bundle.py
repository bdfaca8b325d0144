"""What swarmd reads from a MONAI bundle besides running it: its input spec and its network.

The bundle's `configs/metadata.json` (`network_data_format`) says what images the network takes
(channels, spatial dims) and what it predicts (class scores or a segmentation); data validation is
checked against that. The initial weights come from the bundle's `network_def`, built on the CPU
from the task seed, so every site derives the same tensors and the same content hash.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from swarmd.errors import TaskError
from swarmd.train.data import InputSpec

METADATA = "configs/metadata.json"


@dataclass(frozen=True)
class BundleInfo:
    root: Path
    name: str
    input: InputSpec
    label_kind: str  # "class" (one integer per image) or "mask" (a label image per image)
    n_classes: int


def _get(doc: dict[str, Any], path: str, where: Path) -> Any:
    node: Any = doc
    for key in path.split("."):
        if not isinstance(node, dict) or key not in node:
            raise TaskError(f"{where}: missing {path}", hint="see MONAI's bundle metadata schema")
        node = node[key]
    return node


def read_bundle_info(bundle: Path) -> BundleInfo:
    meta_path = Path(bundle) / METADATA
    try:
        doc = json.loads(meta_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError(f"bundle {bundle} has no {METADATA}") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise TaskError(f"{meta_path}: unreadable bundle metadata: {exc}") from None
    image = _get(doc, "network_data_format.inputs.image", meta_path)
    pred = _get(doc, "network_data_format.outputs.pred", meta_path)
    channels = _get(image, "num_channels", meta_path)
    shape = _get(image, "spatial_shape", meta_path)
    n_classes = _get(pred, "num_channels", meta_path)
    fmt = pred.get("format", "")
    if not (isinstance(channels, int) and channels > 0 and isinstance(n_classes, int) and n_classes > 0):
        raise TaskError(f"{meta_path}: num_channels must be positive integers")
    if not isinstance(shape, list) or len(shape) not in (2, 3):
        raise TaskError(f"{meta_path}: inputs.image.spatial_shape must list 2 or 3 sizes")
    label_kind = "mask" if fmt == "segmentation" else "class"
    name = str(doc.get("name") or Path(bundle).name)
    return BundleInfo(Path(bundle), name, InputSpec(channels, len(shape)), label_kind, n_classes)


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
