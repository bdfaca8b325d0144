"""The three messages decode only when exactly right: any other bytes raise the named error, nothing else."""

from __future__ import annotations

import contextlib

import msgpack
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd.privacy import BadRequest, BadResponse, BadShare, RevealRequest, RevealResponse
from swarmd.privacy.wire import ShareMsg

A, B = "0x" + "aa" * 20, "0x" + "bb" * 20
DECODERS = [(ShareMsg, BadShare), (RevealRequest, BadRequest), (RevealResponse, BadResponse)]
values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**64 - 1)
    | st.binary(max_size=80)
    | st.text(max_size=50)
    | st.floats(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=10),
    max_leaves=20,
)


@settings(max_examples=60, deadline=None)
@given(raw=st.binary(max_size=300) | values.map(msgpack.packb))
def test_arbitrary_input_raises_only_the_named_error(raw: bytes) -> None:
    for cls, err in DECODERS:
        with contextlib.suppress(err):
            cls.from_bytes(raw, err)  # type: ignore[attr-defined]


def test_round_trips_and_exact_types() -> None:
    req = RevealRequest(1, 2, A, B, (A, B), (), (A, B), (), ())
    assert RevealRequest.from_bytes(req.to_bytes(), BadRequest) == req
    resp = RevealResponse(1, 2, A, B, {A: bytes(66)}, {}, {B: bytes(32)})
    assert RevealResponse.from_bytes(resp.to_bytes(), BadResponse) == resp
    body = msgpack.unpackb(req.to_bytes())
    for change in ({"term": True}, {"b": [B, A]}, {"b": [A, A]}, {"leader": A.upper()[:-1]}):
        with pytest.raises(BadRequest):
            RevealRequest.from_bytes(msgpack.packb(body | change), BadRequest)
    with pytest.raises(BadRequest):
        RevealRequest.from_bytes(bytes(1 << 20), BadRequest)
