"""Synthetic demo data for the 1-D task: ECG-like signals stored one `.npy` file per record.

A record is 2 s of a single lead at 128 Hz (256 samples). Class 0 is a regular sinus rhythm; class 1
("arrhythmia") has irregular beat intervals and one or two premature wide beats (a broad, tall QRS
with an inverted T wave and no P wave). Each site's "recorder" is the same `Scanner` the image
kinds use (gain, offset, contrast curve, noise, a coarser sampling rate), so sites differ the way
hospitals' devices do; the label skew comes from `demodata`, which calls `signal_case` per record.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from swarmd.train.demodata import Scanner

SIGNAL_LENGTH = 256
SAMPLE_RATE = 128.0  # Hz


def _wave(t: np.ndarray, at: float, width: float, height: float) -> np.ndarray:
    return height * np.exp(-0.5 * ((t - at) / width) ** 2)


def _beat(t: np.ndarray, at: float, premature: bool) -> np.ndarray:
    """One heartbeat whose R peak is at time `at` (seconds): P, QRS and T as Gaussian waves."""
    if premature:  # ventricular: no P wave, a wide tall complex, a T wave of opposite sign
        return _wave(t, at, 0.04, 0.7) + _wave(t, at + 0.07, 0.04, -0.2) + _wave(t, at + 0.3, 0.07, -0.12)
    return (
        _wave(t, at - 0.16, 0.025, 0.06)  # P
        + _wave(t, at - 0.025, 0.008, -0.06)  # Q
        + _wave(t, at, 0.012, 0.45)  # R
        + _wave(t, at + 0.025, 0.01, -0.12)  # S
        + _wave(t, at + 0.25, 0.05, 0.12)  # T
    )


def _ecg(rng: np.random.Generator, label: int) -> np.ndarray:
    """One clean record in [0, 1]: baseline and its slow wander, then beats at the drawn times."""
    t = np.arange(SIGNAL_LENGTH) / SAMPLE_RATE
    rr = 60.0 / rng.uniform(60, 100)  # seconds between beats
    wander = 0.04 * np.sin(2 * np.pi * rng.uniform(0.1, 0.4) * t + rng.uniform(0, 6.28))
    signal = 0.3 + wander
    at = rng.uniform(0.05, rr)
    # one or two premature beats, early enough to fall inside the record whatever the heart rate
    premature = set(range(1, 1 + int(rng.integers(1, 3)))) if label else set()
    k = 0
    while at < t[-1] + 0.3:
        is_pvc = k in premature
        signal = signal + _beat(t, at, is_pvc)
        jitter = rng.uniform(-0.25, 0.25) * rr if label else rng.uniform(-0.03, 0.03) * rr
        at += (0.6 * rr if k + 1 in premature else rr) + jitter
        k += 1
    return signal.astype(np.float32)


def signal_case(
    rng: np.random.Generator, label: int, scanner: Scanner, folder: Path, stem: str
) -> tuple[dict[str, object], np.ndarray]:
    """Write one record (`signals/<stem>.npy`) as this site's recorder captures it: its datalist entry."""
    from swarmd.train.demodata import acquire  # demodata registers this module: import it when called

    signal = acquire(_ecg(rng, label), scanner, rng, axes=(0,))
    rel = f"signals/{stem}.npy"
    path = folder / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, signal)
    return {"image": rel, "label": int(label)}, signal
