"""Shamir secret sharing of 32-byte secrets over the prime field GF(2^521 - 1).

A secret is the constant term of a random polynomial of degree t - 1; holder x gets (x, f(x)), x >= 1.
Any t shares rebuild it by Lagrange interpolation at 0, and fewer than t are uniformly distributed
whatever the secret (the field is larger than the 2^256 secrets, so secrets embed without reduction).
Coefficients come from the OS CSPRNG (`secrets`). Python's integers are exact; no table, no float.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping, Sequence

from swarmd.privacy.errors import InconsistentShares

PRIME = (1 << 521) - 1  # a Mersenne prime
SHARE_SIZE = 66  # bytes of a field element, big-endian
SECRET_SIZE = 32


def split(
    secret: bytes, t: int, xs: Sequence[int], coefficients: Sequence[int] | None = None
) -> dict[int, int]:
    """Shares of `secret` (32 bytes) for the holders `xs` (distinct, >= 1), t of them needed to rebuild.

    `coefficients`: the polynomial's t - 1 higher coefficients (uniform in [0, p)); random when None."""
    if len(secret) != SECRET_SIZE:
        raise ValueError(f"secret must be {SECRET_SIZE} bytes")
    if not 1 <= t <= len(xs) or len(set(xs)) != len(xs) or min(xs) < 1 or max(xs) >= PRIME:
        raise ValueError(f"need 1 <= t <= {len(xs)} distinct holders x in [1, p)")
    if coefficients is None:
        coefficients = [secrets.randbelow(PRIME) for _ in range(t - 1)]
    if len(coefficients) != t - 1 or not all(0 <= a < PRIME for a in coefficients):
        raise ValueError(f"need {t - 1} coefficients in [0, p)")
    coeffs = [int.from_bytes(secret, "big"), *coefficients]
    out: dict[int, int] = {}
    for x in xs:
        y = 0
        for a in reversed(coeffs):  # Horner
            y = (y * x + a) % PRIME
        out[x] = y
    return out


def _lagrange_at(points: Mapping[int, int], at: int) -> int:
    """The value at `at` of the unique polynomial of degree < len(points) through `points`."""
    total = 0
    for xi, yi in points.items():
        num, den = 1, 1
        for xj in points:
            if xj != xi:
                num = num * (at - xj) % PRIME
                den = den * (xi - xj) % PRIME
        total = (total + yi * num * pow(den, -1, PRIME)) % PRIME
    return total


def combine(shares: Mapping[int, int], t: int) -> bytes:
    """The secret from at least t shares {x: y}. Shares beyond the first t (by x) must lie on the same
    polynomial, else InconsistentShares: a wrong share never silently yields a wrong secret when more
    than t are at hand."""
    if len(shares) < t or t < 1:
        raise InconsistentShares("shares", f"{len(shares)} shares, {t} needed")
    xs = sorted(shares)
    if xs[0] < 1 or xs[-1] >= PRIME or any(not 0 <= y < PRIME for y in shares.values()):
        raise InconsistentShares("shares", "a share lies outside the field")
    base = {x: shares[x] for x in xs[:t]}
    for x in xs[t:]:
        if _lagrange_at(base, x) != shares[x]:
            raise InconsistentShares("inconsistent", f"share {x} is not on the polynomial of the others")
    value = _lagrange_at(base, 0)
    if value >> (8 * SECRET_SIZE):
        raise InconsistentShares("inconsistent", "rebuilt value is not a 32-byte secret")
    return value.to_bytes(SECRET_SIZE, "big")


def to_bytes(y: int) -> bytes:
    return y.to_bytes(SHARE_SIZE, "big")


def from_bytes(raw: bytes) -> int:
    """A share value from the wire; ValueError unless exactly SHARE_SIZE bytes below the prime."""
    if len(raw) != SHARE_SIZE:
        raise ValueError(f"a share is {SHARE_SIZE} bytes, got {len(raw)}")
    y = int.from_bytes(raw, "big")
    if y >= PRIME:
        raise ValueError("a share lies outside the field")
    return y
