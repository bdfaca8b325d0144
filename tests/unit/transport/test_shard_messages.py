"""The `shards` topic's bodies: each kind round-trips, and anything off (version, kind, keys, types,
sizes) is refused by name before it is used."""

from __future__ import annotations

import msgpack
import pytest

from swarmd.transport.shards import (
    BadShardMessage,
    Leaves,
    LeavesAsk,
    Plan,
    Status,
    UpdateAsk,
    UpdateHash,
    decode_shard_msg,
)

A, B = "0x" + "aa" * 20, "0x" + "Bb" * 20
H = bytes(range(32))


@pytest.mark.parametrize(
    "msg",
    [
        LeavesAsk(3, 1),
        Leaves(3, (H, H)),
        Plan(3, 2, 5, (A, A, B)),
        Plan(3, 2, 6, (A, B), include=(A, B), merged=(H, H)),
        Status(3, 2, 6, (A,), {B: "hash_mismatch"}, {0: H}),
        UpdateAsk(3),
        UpdateHash(3, H),
    ],
)
def test_every_kind_round_trips(msg) -> None:
    assert decode_shard_msg(msg.encode()) == msg


def _body(**fields: object) -> bytes:
    return msgpack.packb(fields, use_bin_type=True)


@pytest.mark.parametrize(
    ("body", "why"),
    [
        (b"\xc1", "not msgpack"),
        (_body(kind="leaves_ask", v=1, round=1, term=1), 'starts with "v" and "kind"'),
        (_body(v=2, kind="leaves_ask", round=1, term=1), "shards protocol 2"),
        (_body(v=1, kind="gimme", round=1), "unknown shards kind"),
        (_body(v=1, kind="leaves_ask", round=1), "exactly the keys round, term"),
        (_body(v=1, kind="leaves_ask", round=-1, term=1), "unsigned integer"),
        (_body(v=1, kind="leaves", round=1, hashes=[b"short"]), "32 bytes"),
        (_body(v=1, kind="update", round=1, hash=[H]), "32 bytes"),
        (_body(v=1, kind="leaves", round=1, hashes=[H] * 257), "1..256 hashes"),
        (
            _body(v=1, kind="plan", round=1, term=1, epoch=0, owners=["alice"], include=None, merged=None),
            "0x and 40 hex",
        ),
        (
            _body(v=1, kind="plan", round=1, term=1, epoch=0, owners=[A], include=None, merged=[H, H]),
            "a merged hash, for every leaf",
        ),
        (
            _body(v=1, kind="status", round=1, term=1, epoch=0, held=[], failed={A: "Bad Label!"}, merged={}),
            "lowercase label",
        ),
        (
            _body(v=1, kind="status", round=1, term=1, epoch=0, held=[], failed={}, merged={999: H}),
            "out of range",
        ),
    ],
)
def test_anything_off_is_refused_by_name(body: bytes, why: str) -> None:
    with pytest.raises(BadShardMessage, match=why):
        decode_shard_msg(body)


def test_a_plan_says_which_leaves_a_site_owns_whatever_its_case() -> None:
    plan = Plan(0, 1, 0, (A, B, A, B.lower()))
    assert plan.leaves_of(A.upper().replace("0X", "0x")) == [0, 2]
    assert plan.leaves_of(B) == [1, 3]
