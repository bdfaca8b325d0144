"""Synthetic demo data: real PNG / NIfTI / .npy files, one Decathlon datalist per site, a shared test set.

Nothing is downloaded. The images are drawn so that the task is learnable in a few dozen steps and
so that sites differ the way hospitals do:

- label skew: each site's class mix is drawn from Dirichlet(alpha); a small alpha gives sites that
  see mostly one class, which then do clearly worse alone than the swarm does;
- acquisition shift: each site has its own "scanner" (gain, offset, contrast curve, noise level
  and resolution), applied to every image it produces.

classification: 64x64 chest-X-ray-like PNGs; class 1 carries a bright opacity in a lung field.
segmentation:   32^3 NIfTI volumes of an organ with tumour-like lesions and their masks; the
                skewed "class" is the lesion size (small or large).
signal:         1-D ECG-like records, one `.npy` file each; class 1 has irregular and premature
                beats (`train.demosignal`).

Everything is a pure function of (seed, site index), so two runs write the same files.
"""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from swarmd.errors import UsageError

TASKS = ("classification", "segmentation", "signal")
CLASS_NAMES = {
    "classification": ("normal", "opacity"),
    "segmentation": ("small lesion", "large lesion"),
    "signal": ("normal", "arrhythmia"),
}
DEFAULT_SIZES = {"classification": (60, 80), "segmentation": (24, 16), "signal": (60, 80)}  # (site, test)
IMAGE_SIZE_2D = 64
VOLUME_SIZE = 32


@dataclass(frozen=True)
class Scanner:
    """One site's acquisition: out = gain * in**gamma + offset + noise, at 1/`downsample` resolution."""

    gain: float
    offset: float
    gamma: float
    noise: float
    downsample: int

    def describe(self) -> str:
        return (
            f"gain {self.gain:.2f}, offset {self.offset:+.2f}, gamma {self.gamma:.2f}, "
            f"noise {self.noise:.3f}, res 1/{self.downsample}"
        )


@dataclass(frozen=True)
class SiteData:
    name: str
    datalist: Path
    n_train: int
    n_val: int
    class_counts: tuple[int, ...]  # over train + validation
    intensity_mean: float  # of the stored image files, before any normalisation
    intensity_sd: float
    scanner: Scanner


@dataclass(frozen=True)
class DemoData:
    root: Path
    task: str
    seed: int
    alpha: float
    class_names: tuple[str, ...]
    sites: tuple[SiteData, ...]
    test_datalist: Path
    test_counts: tuple[int, ...] = field(default=())

    @property
    def site_datalists(self) -> list[Path]:
        return [s.datalist for s in self.sites]


# --- shared image maths -----------------------------------------------------------------------------


def _smooth_field(rng: np.random.Generator, shape: tuple[int, ...], coarse: int) -> np.ndarray:
    """Low-frequency noise in [-1, 1]: random coarse grid, upsampled (tissue texture)."""
    grid = torch.from_numpy(rng.uniform(-1, 1, size=(1, 1) + (coarse,) * len(shape)).astype(np.float32))
    mode = "bilinear" if len(shape) == 2 else "trilinear"
    return F.interpolate(grid, size=shape, mode=mode, align_corners=False)[0, 0].numpy()


def _coords(shape: tuple[int, ...]) -> list[np.ndarray]:
    axes = [np.linspace(-1.0, 1.0, n, dtype=np.float32) for n in shape]
    return list(np.meshgrid(*axes, indexing="ij"))


def _lower_resolution(img: np.ndarray, factor: int, axes: tuple[int, ...]) -> np.ndarray:
    """Average blocks of `factor` along `axes`, then repeat back: a coarser scanner, same array size."""
    if factor <= 1:
        return img
    out = img
    for ax in axes:
        n = out.shape[ax]
        moved = np.moveaxis(out, ax, 0)
        blocks = moved.reshape((n // factor, factor, *moved.shape[1:])).mean(axis=1)
        out = np.moveaxis(np.repeat(blocks, factor, axis=0), 0, ax)
    return out


def acquire(
    clean: np.ndarray, scanner: Scanner, rng: np.random.Generator, axes: tuple[int, ...]
) -> np.ndarray:
    img = np.clip(clean, 0.0, 1.0) ** scanner.gamma
    img = _lower_resolution(img, scanner.downsample, axes)
    img = scanner.gain * img + scanner.offset + rng.normal(0.0, scanner.noise, size=img.shape)
    return img.astype(np.float32)


def _scanner(rng: np.random.Generator) -> Scanner:
    return Scanner(
        gain=float(rng.uniform(0.6, 1.3)),
        offset=float(rng.uniform(-0.08, 0.12)),
        gamma=float(rng.uniform(0.7, 1.5)),
        noise=float(rng.uniform(0.01, 0.07)),
        downsample=int(rng.choice([1, 2])),
    )


# --- classification: chest-X-ray-like PNGs ---------------------------------------------------------


@dataclass(frozen=True)
class Anatomy:
    """The texture of a chest-like image: how coarse its fields are and how strong its ribs."""

    coarse: int  # the background's smooth field
    fine: int  # the body's and the lungs' smooth fields
    body: float  # their amplitudes
    lung: float
    ribs: float
    rib_freq: tuple[float, float]


def chest_anatomy(
    rng: np.random.Generator, n: int, a: Anatomy
) -> tuple[np.ndarray, np.ndarray, list[tuple[float, float, float, float]]]:
    """(image in [0, 1], the body's mask, each lung's (cx, cy, rx, ry)) of a clean n x n chest."""
    y, x = _coords((n, n))
    img = 0.12 + 0.05 * _smooth_field(rng, (n, n), a.coarse)
    body = (x / 0.92) ** 2 + (y / 0.98) ** 2 < 1.0
    img = np.where(body, 0.55 + a.body * _smooth_field(rng, (n, n), a.fine), img)
    lungs = []
    for side in (-1.0, 1.0):
        cx, cy = side * rng.uniform(0.33, 0.42), rng.uniform(-0.12, 0.0)
        rx, ry = rng.uniform(0.22, 0.3), rng.uniform(0.5, 0.62)
        lung = ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 < 1.0
        lungs.append((cx, cy, rx, ry))
        ribs = a.ribs * np.sin(y * rng.uniform(*a.rib_freq) + rng.uniform(0, 6.28))
        img = np.where(lung, 0.22 + ribs + a.lung * _smooth_field(rng, (n, n), a.fine), img)
    return img, body, lungs


CHEST = Anatomy(coarse=6, fine=8, body=0.04, lung=0.03, ribs=0.04, rib_freq=(18, 24))


def _chest(rng: np.random.Generator, label: int) -> np.ndarray:
    """One clean 64x64 chest-like image in [0, 1]; label 1 adds an opacity inside a lung field."""
    n = IMAGE_SIZE_2D
    y, x = _coords((n, n))
    img, body, lungs = chest_anatomy(rng, n, CHEST)
    spine = np.abs(x) < 0.07
    img = np.where(spine & body, img + 0.15, img)
    if label == 1:
        for _ in range(int(rng.integers(1, 3))):
            cx, cy, rx, ry = lungs[int(rng.integers(0, 2))]
            bx, by = cx + rng.uniform(-0.5, 0.5) * rx, cy + rng.uniform(-0.5, 0.5) * ry
            s = rng.uniform(0.1, 0.18)
            img = img + rng.uniform(0.35, 0.5) * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * s * s))
    return img.astype(np.float32)


def _write_png(path: Path, img: np.ndarray) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray((np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8), mode="L").save(path)


def _classification_case(
    rng: np.random.Generator, label: int, scanner: Scanner, folder: Path, stem: str
) -> tuple[dict[str, object], np.ndarray]:
    img = acquire(_chest(rng, label), scanner, rng, axes=(0, 1))
    rel = f"images/{stem}.png"
    _write_png(folder / rel, img)
    return {"image": rel, "label": int(label)}, np.clip(img, 0.0, 1.0)


# --- segmentation: NIfTI volumes with lesions -------------------------------------------------------


def _volume(rng: np.random.Generator, kind: int) -> tuple[np.ndarray, np.ndarray]:
    """A clean 32^3 organ with 1-2 hyperdense lesions (kind 0 small, kind 1 large) and its mask."""
    n = VOLUME_SIZE
    shape = (n, n, n)
    z, y, x = _coords(shape)
    img = 0.1 + 0.03 * _smooth_field(rng, shape, 4)
    radii = rng.uniform(0.6, 0.85, size=3)
    organ = (x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2 < 1.0
    img = np.where(organ, 0.4 + 0.04 * _smooth_field(rng, shape, 6), img)
    mask = np.zeros(shape, dtype=np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        c = rng.uniform(-0.4, 0.4, size=3) * radii
        r = rng.uniform(0.1, 0.17) if kind == 0 else rng.uniform(0.22, 0.34)
        lesion = ((x - c[0]) ** 2 + (y - c[1]) ** 2 + (z - c[2]) ** 2 < r * r) & organ
        delta = rng.uniform(0.35, 0.5)
        img = np.where(lesion, img + delta, img)
        mask[lesion] = 1
    return img.astype(np.float32), mask


def _write_nifti(path: Path, arr: np.ndarray, spacing: tuple[float, float, float]) -> None:
    import nibabel as nib

    affine = np.diag([*spacing, 1.0]).astype(np.float64)
    img = nib.Nifti1Image(arr, affine)
    img.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    # mtime=0 keeps the .gz bytes identical from run to run
    path.write_bytes(gzip.compress(img.to_bytes(), compresslevel=6, mtime=0))


def _segmentation_case(
    rng: np.random.Generator, kind: int, scanner: Scanner, folder: Path, stem: str
) -> tuple[dict[str, object], np.ndarray]:
    clean, mask = _volume(rng, kind)
    # CT-like units; the scanner's coarse resolution is thick slices along the last axis
    img = acquire(clean, scanner, rng, axes=(2,)) * 1000.0 - 200.0
    spacing = (1.0, 1.0, float(scanner.downsample))
    _write_nifti(folder / f"images/{stem}.nii.gz", img, spacing)
    _write_nifti(folder / f"labels/{stem}.nii.gz", mask, spacing)
    return {"image": f"images/{stem}.nii.gz", "label": f"labels/{stem}.nii.gz"}, img


# --- assembling sites -------------------------------------------------------------------------------

CaseFn = Callable[[np.random.Generator, int, Scanner, Path, str], tuple[dict[str, object], np.ndarray]]
_CASES: dict[str, CaseFn] = {"classification": _classification_case, "segmentation": _segmentation_case}


def _case(task: str) -> CaseFn:
    if task == "signal":  # its own module, which uses this one's scanner maths
        from swarmd.train.demosignal import signal_case

        return signal_case
    return _CASES[task]


def _write_datalist(path: Path, doc: dict[str, object]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n", encoding="utf-8")


def class_mix(seed: int, index: int, alpha: float, k: int) -> np.ndarray:
    """Site `index`'s class proportions, Dirichlet(alpha): the first draw of its generator in `_make_site`."""
    return np.random.default_rng([seed, index, 0]).dirichlet([alpha] * k)


def _make_site(
    out: Path,
    index: int,
    task: str,
    alpha: float,
    seed: int,
    n: int,
    case: CaseFn | None = None,
    draw_scanner: Callable[[np.random.Generator], Scanner] = _scanner,
) -> tuple[SiteData, list[np.ndarray]]:
    """Site `index`: `n` images of `task` (or drawn by `case`) through its own scanner, label skew `alpha`."""
    rng = np.random.default_rng([seed, index, 0])
    scanner = draw_scanner(np.random.default_rng([seed, index, 1]))
    case = case or _case(task)
    k = len(CLASS_NAMES[task])
    labels = rng.choice(k, size=n, p=rng.dirichlet([alpha] * k))
    name = f"site-{index + 1}"
    folder = out / name
    entries, images = [], []
    for i, label in enumerate(labels):
        entry, img = case(rng, int(label), scanner, folder, f"{name}_{i:04d}")
        entries.append(entry)
        images.append(img)
    n_val = max(1, n // 5)
    datalist = folder / "datalist.json"
    _write_datalist(
        datalist,
        {
            "name": f"swarmd demo {task}, {name}",
            "description": f"synthetic; Dirichlet({alpha}) label skew; scanner: {scanner.describe()}",
            "training": entries[n_val:],
            "validation": entries[:n_val],
        },
    )
    pixels = np.concatenate([im.ravel() for im in images])
    counts = tuple(int((labels == c).sum()) for c in range(k))
    site = SiteData(
        name, datalist, n - n_val, n_val, counts, float(pixels.mean()), float(pixels.std()), scanner
    )
    return site, images


def _make_test(
    out: Path, task: str, seed: int, n: int, scanners: list[Scanner], cases: list[CaseFn] | None = None
) -> tuple[Path, tuple[int, ...]]:
    """Balanced classes; each image from one of the sites' scanners (and `cases`, when given) in turn, so
    no site is favoured."""
    rng = np.random.default_rng([seed, 1_000_000, 0])
    cases = cases or [_case(task)]
    k = len(CLASS_NAMES[task])
    folder = out / "test"
    entries = []
    for i in range(n):
        case = cases[(i // k) % len(cases)]  # both classes of each case kind, in turn
        entry, _ = case(rng, i % k, scanners[i % len(scanners)], folder, f"test_{i:04d}")
        entries.append(entry)
    datalist = folder / "datalist.json"
    # Held out: no training entries, so nothing ever trains on it by accident. "validation" is what the
    # sites score models on; "test" (images only) is what an exported bundle's inference.json reads.
    _write_datalist(
        datalist,
        {
            "name": f"swarmd demo {task}, shared held-out test set",
            "training": [],
            "validation": entries,
            "test": [{"image": e["image"]} for e in entries],
        },
    )
    return datalist, tuple(n // k + (1 if c < n % k else 0) for c in range(k))


def _check_args(sites: int, task: str, alpha: float, seed: int, n_per_site: int, n_test: int) -> None:
    if task not in TASKS:
        raise UsageError(f"--task must be one of {', '.join(TASKS)}, got {task!r}")
    if not 1 <= sites <= 64:
        raise UsageError(f"--sites must be between 1 and 64, got {sites}")
    if not alpha > 0:
        raise UsageError(f"--non-iid ALPHA must be > 0, got {alpha}", hint="e.g. 0.3 (skewed) or 100 (IID)")
    if seed < 0:
        raise UsageError(f"--seed must be >= 0, got {seed}")
    if n_per_site < 2 or n_test < 2:
        raise UsageError("each site and the test set need at least 2 images")


def generate_demo_data(
    out: Path,
    *,
    sites: int,
    task: str,
    alpha: float,
    seed: int,
    n_per_site: int = 60,
    n_test: int = 80,
) -> DemoData:
    """Write `sites` site folders (`site-N/datalist.json` + images) and `test/datalist.json` under `out`."""
    _check_args(sites, task, alpha, seed, n_per_site, n_test)
    out = Path(out)
    made = [_make_site(out, i, task, alpha, seed, n_per_site) for i in range(sites)]
    site_data = tuple(s for s, _ in made)
    test, test_counts = _make_test(out, task, seed, n_test, [s.scanner for s in site_data])
    return DemoData(out, task, seed, alpha, CLASS_NAMES[task], site_data, test, test_counts)


def preview_images(demo: DemoData, path: Path, per_site: int = 6) -> Path:
    """A PNG grid: one row per site, `per_site` example images (middle slice for volumes)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from swarmd.train.data import load_image, read_datalist

    rows = len(demo.sites)
    fig, axes = plt.subplots(rows, per_site, figsize=(1.6 * per_site, 1.7 * rows), squeeze=False)
    for r, site in enumerate(demo.sites):
        items = read_datalist(site.datalist, "training").items
        for c in range(per_site):
            ax = axes[r][c]
            ax.axis("off")
            if c >= len(items):
                continue
            _show(ax, items[c], demo.task, load_image)
        axes[r][0].set_title(site.name, fontsize=8, loc="left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _show(ax: object, item: dict[str, object], task: str, load: Callable[[Path], object]) -> None:
    if task == "signal":
        ax.plot(np.load(str(item["image"])), linewidth=0.6)  # type: ignore[attr-defined]
        where = {"transform": ax.transAxes, "color": "red", "fontsize": 7}  # type: ignore[attr-defined]
        ax.text(0.02, 0.85, str(item["label"]), **where)  # type: ignore[attr-defined]
        return
    img = np.asarray(load(Path(str(item["image"]))))[0]
    if task == "segmentation":
        mid = img.shape[2] // 2
        mask = np.asarray(load(Path(str(item["label"]))))[0][:, :, mid]
        ax.imshow(img[:, :, mid].T, cmap="gray")  # type: ignore[attr-defined]
        ax.contour(mask.T, levels=[0.5], colors="r", linewidths=0.6)  # type: ignore[attr-defined]
    else:
        ax.imshow(img.T, cmap="gray")  # type: ignore[attr-defined]
        ax.text(1, 6, str(item["label"]), color="yellow", fontsize=7)  # type: ignore[attr-defined]
