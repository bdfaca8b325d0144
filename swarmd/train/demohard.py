"""The learning bench's hard task: generated sites on which pooled training clearly beats every single site.

`demodata`'s classification task is easy (every arm of `swarm bench learning` scored 0.97-1.0), so it
cannot tell a good method from a bad one. This one is built so that no single site can learn it alone:

- small findings on textured, noisy lungs (a nodule is a few pixels across at 32x32);
- two kinds of finding, and each site holds only one: a small bright nodule or a larger dark bulla. The
  kinds alternate over the sites ranked by their share of positive cases, so the two sites richest in
  findings hold different kinds (at alpha 0.1 most sites hold one class only); the shared test set
  holds both kinds in equal parts;
- per-site scanner shift (gain, offset, contrast curve, noise), on images where the finding is faint;
- few images per site (40, a fifth held out for validation) at 32x32, for the small `cxr_small` bundle.

Label skew is `demodata`'s: each site's class mix is drawn from Dirichlet(alpha). Everything is a pure
function of (seed, site index), so two runs write the same files.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from swarmd.train.demodata import (
    CLASS_NAMES,
    Anatomy,
    CaseFn,
    DemoData,
    Scanner,
    _check_args,
    _coords,
    _make_site,
    _make_test,
    _write_png,
    acquire,
    chest_anatomy,
    class_mix,
)

HARD_SIZE = 32
FINDINGS = ("nodule", "bulla")
HARD_SITE_IMAGES = 40
HARD_TEST_IMAGES = 200


def hard_scanner(rng: np.random.Generator) -> Scanner:
    """A site's acquisition. The bundle rescales each image to [0, 1], so the contrast curve and the noise
    are what stays different. All sites keep the full resolution: with a coarser scanner at some sites,
    pooled training at alpha 0.1 (where most sites hold one class) learned the resolution, not the finding.
    The contrast ranges are narrower than they once were (gain 0.5-1.5, offset -0.1-0.15, gamma 0.7-1.4) for
    the same reason: with them, a seed whose sites each held one class (alpha 0.1, seed 2) pooled into a
    model below its best single site, having learned each scanner's label."""
    return Scanner(
        gain=float(rng.uniform(0.75, 1.25)),
        offset=float(rng.uniform(-0.05, 0.08)),
        gamma=float(rng.uniform(0.85, 1.2)),
        noise=float(rng.uniform(0.01, 0.04)),
        downsample=1,
    )


HARD_CHEST = Anatomy(coarse=4, fine=6, body=0.05, lung=0.05, ribs=0.05, rib_freq=(9, 12))


def hard_chest(rng: np.random.Generator, label: int, finding: str, n: int = HARD_SIZE) -> np.ndarray:
    """One clean chest-like image in [0, 1]; label 1 adds a faint `finding` inside a lung field."""
    y, x = _coords((n, n))
    img, _, lungs = chest_anatomy(rng, n, HARD_CHEST)
    if label == 1:
        cx, cy, rx, ry = lungs[int(rng.integers(0, 2))]
        bx, by = cx + rng.uniform(-0.4, 0.4) * rx, cy + rng.uniform(-0.4, 0.4) * ry
        if finding == "nodule":  # a small bright spot
            s, amp = rng.uniform(0.1, 0.14), rng.uniform(0.6, 0.75)
        else:  # a bulla: a larger patch darker than the lung around it
            s, amp = rng.uniform(0.18, 0.24), -rng.uniform(0.24, 0.3)
        img = img + amp * np.exp(-((x - bx) ** 2 + (y - by) ** 2) / (2 * s * s))
    return img.astype(np.float32)


def _hard_case(
    finding: str, rng: np.random.Generator, label: int, scanner: Scanner, folder: Path, stem: str
) -> tuple[dict[str, object], np.ndarray]:
    img = acquire(hard_chest(rng, label, finding), scanner, rng, axes=(0, 1))
    rel = f"images/{stem}.png"
    _write_png(folder / rel, img)
    return {"image": rel, "label": int(label)}, np.clip(img, 0.0, 1.0)


def site_findings(sites: int, alpha: float, seed: int) -> list[str]:
    """The finding kind each site holds: alternating over the sites ranked by their share of positives."""
    share = [class_mix(seed, i, alpha, len(CLASS_NAMES["classification"]))[1] for i in range(sites)]
    ranked = sorted(range(sites), key=lambda i: (-share[i], i))
    kinds = [""] * sites
    for rank, i in enumerate(ranked):
        kinds[i] = FINDINGS[rank % len(FINDINGS)]
    return kinds


def generate_hard_data(
    out: Path,
    *,
    sites: int,
    alpha: float,
    seed: int,
    n_per_site: int = HARD_SITE_IMAGES,
    n_test: int = HARD_TEST_IMAGES,
) -> DemoData:
    """Write the hard task's `sites` site folders and shared test set under `out`, as `generate_demo_data`."""
    _check_args(sites, "classification", alpha, seed, n_per_site, n_test)
    out = Path(out)
    kinds = site_findings(sites, alpha, seed)
    made = [
        _make_site(
            out,
            i,
            "classification",
            alpha,
            seed,
            n_per_site,
            case=partial(_hard_case, kinds[i]),
            draw_scanner=hard_scanner,
        )
        for i in range(sites)
    ]
    site_data = tuple(s for s, _ in made)
    cases: list[CaseFn] = [partial(_hard_case, f) for f in FINDINGS]
    test, counts = _make_test(out, "classification", seed, n_test, [s.scanner for s in site_data], cases)
    return DemoData(out, "hard", seed, alpha, CLASS_NAMES["classification"], site_data, test, counts)
