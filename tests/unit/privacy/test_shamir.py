"""Shamir over GF(2^521 - 1): any t shares rebuild the secret, fewer say nothing, bad shares are caught."""

from __future__ import annotations

import itertools
import os

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd.privacy import shamir
from swarmd.privacy.errors import InconsistentShares


@settings(max_examples=25, deadline=None)
@given(secret=st.binary(min_size=32, max_size=32), n=st.integers(1, 9), data=st.data())
def test_any_t_shares_rebuild_the_secret(secret: bytes, n: int, data: st.DataObject) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 1 << 20), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, t, xs)
    for subset in itertools.islice(itertools.combinations(xs, t), 10):
        assert shamir.combine({x: shares[x] for x in subset}, t) == secret
    assert shamir.combine(shares, t) == secret  # all n: the extra ones are checked and agree


def test_fewer_than_t_shares_fit_every_secret() -> None:
    """t - 1 shares plus ANY candidate secret define a valid polynomial: the shares exclude nothing."""
    shares = shamir.split(os.urandom(32), 3, [1, 2, 3])
    partial = {1: shares[1], 2: shares[2]}
    for candidate in (bytes(32), b"\xff" * 32, os.urandom(32)):
        points = {0: int.from_bytes(candidate, "big"), **partial}
        assert shamir._lagrange_at(points, 0) == int.from_bytes(candidate, "big")
    with pytest.raises(InconsistentShares):
        shamir.combine(partial, 3)


def test_a_wrong_share_is_caught_when_more_than_t_are_at_hand() -> None:
    secret = os.urandom(32)
    shares = shamir.split(secret, 3, [1, 2, 3, 4, 5])
    shares[4] = (shares[4] + 1) % shamir.PRIME
    with pytest.raises(InconsistentShares) as err:
        shamir.combine(shares, 3)
    assert err.value.reason == "inconsistent"


def test_share_bytes_round_trip_and_bounds() -> None:
    assert shamir.from_bytes(shamir.to_bytes(shamir.PRIME - 1)) == shamir.PRIME - 1
    with pytest.raises(ValueError):
        shamir.from_bytes(shamir.PRIME.to_bytes(66, "big"))
    with pytest.raises(ValueError):
        shamir.from_bytes(bytes(65))
    with pytest.raises(ValueError):
        shamir.split(bytes(32), 3, [1, 2])
    with pytest.raises(ValueError):
        shamir.split(bytes(32), 1, [0])


def test_shares_sent_again_after_a_restart_lie_on_the_first_polynomial() -> None:
    from swarmd.privacy.keys import polynomial

    enc_sk, view = bytes(range(32)), b"v" * 32
    prime = shamir.PRIME
    first = polynomial(enc_sk, view, b"b", 4, prime)
    assert first == polynomial(enc_sk, view, b"b", 4, prime)  # the same after a restart
    assert first != polynomial(enc_sk, view, b"c", 4, prime)  # another secret, another polynomial
    assert first != polynomial(enc_sk, b"w" * 32, b"b", 4, prime)  # another view, fresh coefficients
    assert polynomial(enc_sk, view, b"b", 0, prime) == []
    secret = bytes(32)
    xs = [1, 2, 3, 4, 5]
    shares = shamir.split(secret, 5, xs, first)
    assert shares == shamir.split(secret, 5, xs, first) != shamir.split(secret, 5, xs)
    assert shamir.combine(shares, 5) == secret
