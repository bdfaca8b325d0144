"""Fixed point and masks: an update becomes uint32 tensors that look uniform to whoever holds one.

    masked_i = q(n_i * clip(x_i)) + PRG(b_i) + sum_{j in N(i), j > i} PRG(s_ij)
                                             - sum_{j in N(i), j < i} PRG(s_ij)      (mod 2^32)

q rounds to fixed point with `SecAggParams.scale` and is capped at floor(n_i * (2^31 - 1) / bound), so
the sum over sites whose samples total at most `sample_bound` stays within int32 and decodes exactly.
PRG(seed) for tensor number k (names sorted) is the ChaCha20 keystream under key `seed` and a nonce
naming k, read as little-endian uint32; it is added chunk by chunk in place (numpy, no Python loop per
element), so masking costs a few passes of memory bandwidth per neighbour.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms

from swarmd.privacy.errors import BadUpdate
from swarmd.privacy.params import SecAggParams

CHUNK_WORDS = 1 << 18  # 1 MiB of keystream at a time: stays in cache, allocates little
_ZEROS = bytes(4 * CHUNK_WORDS)
MAX_INT = (1 << 31) - 1


def nonce(index: int) -> bytes:
    """ChaCha20's 16-byte nonce in `cryptography`: block counter 0 (4 bytes LE), then 12 naming the tensor."""
    return bytes(4) + index.to_bytes(12, "big")


def apply_prg(out: np.ndarray, seed: bytes, index: int, sign: int) -> None:
    """out += sign * PRG(seed, tensor index) (mod 2^32), in place; `out` is a flat contiguous uint32 array."""
    stream = Cipher(algorithms.ChaCha20(seed, nonce(index)), mode=None).encryptor()
    for start in range(0, out.size, CHUNK_WORDS):
        part = out[start : start + CHUNK_WORDS]
        ks = np.frombuffer(stream.update(_ZEROS[: 4 * part.size]), dtype="<u4")
        if sign > 0:
            np.add(part, ks, out=part)
        else:
            np.subtract(part, ks, out=part)


def apply_masks(tensors: Mapping[str, np.ndarray], masks: Iterable[tuple[bytes, int]]) -> None:
    """Add each (seed, sign) keystream to every tensor in place; tensor k (sorted names) uses nonce k."""
    flat = [tensors[name].reshape(-1) for name in sorted(tensors)]
    for seed, sign in masks:
        for index, out in enumerate(flat):
            apply_prg(out, seed, index, sign)


def quantise(
    tensors: Mapping[str, np.ndarray], n_samples: int, params: SecAggParams
) -> dict[str, np.ndarray]:
    """q(n * clip(x)) as uint32 (two's complement), same names and shapes; BadUpdate for non-finite values,
    non-float tensors or a sample count outside [1, sample_bound]."""
    if type(n_samples) is not int or not 1 <= n_samples <= params.sample_bound:
        raise BadUpdate(
            "samples", f"n_samples must be an int in [1, {params.sample_bound}], got {n_samples!r}"
        )
    cap = float(n_samples * MAX_INT // params.sample_bound)
    factor = params.scale * n_samples
    out: dict[str, np.ndarray] = {}
    for name in sorted(tensors):
        x = np.asarray(tensors[name])
        if not isinstance(name, str) or not np.issubdtype(x.dtype, np.floating):
            raise BadUpdate("dtype", f"tensor {name!r} must be floating point, got {x.dtype}")
        if not np.isfinite(x).all():
            raise BadUpdate("non_finite", f"tensor {name!r} has non-finite values")
        v = np.array(x, dtype=np.float64, order="C")
        np.clip(v, -params.clip_range, params.clip_range, out=v)
        v *= factor
        np.rint(v, out=v)
        np.clip(v, -cap, cap, out=v)
        out[name] = v.astype(np.int32).view(np.uint32)
    return out


def decode(total: np.ndarray, n_total: int, params: SecAggParams) -> np.ndarray:
    """The float32 mean from the unmasked uint32 sum: signed, divided by scale * sum of samples."""
    return (total.view(np.int32).astype(np.float64) / (params.scale * n_total)).astype(np.float32)
