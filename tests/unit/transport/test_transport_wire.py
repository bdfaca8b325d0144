"""Transport wire units: message round trips and validation (messages.py). Streams: test_stream.py."""

from __future__ import annotations

import msgpack
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from swarmd import codec
from swarmd.errors import PeerRejected
from swarmd.transport import messages as m

V = m.PROTOCOL_VERSION

MANIFEST = codec.manifest_of({"a": torch.zeros(3), "b": torch.zeros(2, 2, dtype=torch.int64)})
SAMPLES = [
    m.Ping(1, 2.5),
    m.Pong(1, 2.5),
    m.Announce(3, 4, bytes(32)),
    m.UpdateOffer(
        5, 6, 7, bytes(range(32)), MANIFEST, {"samples": 12, "loss": 0.5, "site": "a", "diff": True}
    ),
    m.Fetch(8, bytes(32), 1 << 30, None),
    m.Fetch(8, bytes(32), 1 << 30, bytes(32)),
    m.Serve(9, bytes(16), MANIFEST, 7701),
    m.Grant(10, bytes(16), 4, bytes(32), 7701),
    m.Grant(10, bytes(16), 1),
    m.Chunk(bytes(16), 11),
    m.Cancel(bytes(16), "sender gave up"),
    m.Reply(12, False, m.Refusal.TOO_LARGE, "detail"),
    m.Reply(13, True),
]


@pytest.mark.parametrize("msg", SAMPLES, ids=lambda x: type(x).__name__)
def test_every_kind_round_trips(msg: m.Message) -> None:
    assert m.decode(m.encode(msg)) == msg


def test_a_secagg_body_round_trips_up_to_its_bound_and_a_larger_frame_is_oversize() -> None:
    body = bytes(m.MAX_SECAGG_BODY)
    msg = m.decode(m.encode(m.SecAgg(3, 7, m.SecAggTopic.SHARES, body)))
    assert msg == m.SecAgg(3, 7, m.SecAggTopic.SHARES, body)
    frame = msgpack.packb({"v": V, "kind": "secagg_reply", "req": 1, "body": bytes(m.SECAGG_FRAME)})
    with pytest.raises(m.BadMessage) as err:
        m.decode(frame)
    assert err.value.reason == "oversize"


def test_a_refusal_decodes_as_its_enum_member_and_a_broken_stream_label_maps_to_one() -> None:
    reply = m.decode(m.encode(m.Reply(1, False, m.Refusal.NOT_READY)))
    assert isinstance(reply, m.Reply) and reply.reason is m.Refusal.NOT_READY
    assert m.as_refusal("stalled") is m.Refusal.STALLED
    assert m.as_refusal("over_credit") is m.Refusal.BAD_STREAM


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        ({"v": V, "kind": "ping", "req": 1, "sent": float("nan")}, "bad_field"),
        ({"v": V, "kind": "ping", "req": True, "sent": 0.0}, "bad_field"),
        ({"v": V, "kind": "ping", "req": 1, "sent": 0.0, "extra": 1}, "bad_field"),
        ({"v": V, "kind": "chunk", "sid": bytes(15), "seq": 0}, "bad_field"),
        ({"v": V, "kind": "reply", "req": 1, "ok": 1, "reason": None, "detail": ""}, "bad_field"),
        # a refusal outside the vocabulary, or the free text that protocol 1 sent
        ({"v": V, "kind": "reply", "req": 1, "ok": False, "reason": "lol", "detail": ""}, "bad_field"),
        ({"v": V, "kind": "reply", "req": 1, "ok": False, "reason": "", "detail": ""}, "bad_field"),
        ({"v": 1, "kind": "ping", "req": 1, "sent": 0.0}, "bad_version"),
        # secure-aggregation messages: a topic outside the vocabulary, an empty body, a bin where none belongs
        ({"v": V, "kind": "secagg", "req": 1, "round": 1, "topic": "gimme", "body": b"x"}, "bad_field"),
        ({"v": V, "kind": "secagg", "req": 1, "round": 1, "topic": "unmask", "body": b""}, "bad_field"),
        ({"v": V, "kind": "secagg_reply", "req": 1, "body": "text, not bytes"}, "bad_field"),
        ({"v": V, "kind": "announce", "req": 1, "round": 1, "model_hash": bytes(1000)}, "bad_field"),
        (
            {
                "v": V,
                "kind": "update",
                "req": 1,
                "round": 1,
                "term": 0,
                "digest": bytes(32),
                "manifest": [],
                "meta": {"k": [1]},
            },
            "bad_field",
        ),
        (
            {
                "v": V,
                "kind": "update",
                "req": 1,
                "round": 1,
                "term": 0,
                "digest": bytes(32),
                "manifest": [{"name": "a"}],
                "meta": {},
            },
            "bad_manifest",
        ),
        (
            {
                "v": V,
                "kind": "update",
                "req": 1,
                "round": 1,
                "term": 0,
                "digest": bytes(32),
                "manifest": [],
                "meta": {str(i): i for i in range(40)},
            },
            "bad_header",
        ),  # over the map-length unpack limit
        ({"v": "1", "kind": "ping", "req": 1, "sent": 0.0}, "bad_version"),
        ({"kind": "ping"}, "bad_version"),
        ({"v": V, "kind": {"x": 1}}, "unknown_kind"),
    ],
)
def test_invalid_headers_name_their_reason(header: dict, reason: str) -> None:
    with pytest.raises(m.BadMessage) as info:
        m.decode(msgpack.packb(header, use_bin_type=True))
    assert info.value.reason == reason


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_decode_of_random_bytes_only_raises_bad_message(data: bytes) -> None:
    try:
        msg = m.decode(data)
    except m.BadMessage as exc:
        assert exc.reason in {"bad_header", "bad_version", "unknown_kind", "bad_field", "bad_manifest"}
    else:
        assert isinstance(msg, m.Message)


# --- decode budgets -----------------------------------------------------------------------------------


def _offer_header(manifest: object) -> bytes:
    return msgpack.packb(
        {
            "v": V,
            "kind": "update",
            "req": 1,
            "round": 1,
            "term": 0,
            "digest": bytes(32),
            "manifest": manifest,
            "meta": {},
        },
        use_bin_type=True,
    )


def _reason_of(frame: bytes, **kw: int) -> str:
    with pytest.raises(m.BadMessage) as info:
        m.decode(frame, **kw)
    return info.value.reason


def test_nested_empty_arrays_are_cut_off_by_the_total_object_budget() -> None:
    # 60 000 empty arrays in one 60 kB frame: within every per-container limit, ~50x in memory
    assert _reason_of(_offer_header([[]] * 60_000)) == "over_budget"
    small = msgpack.packb({"v": V, "kind": "ping", "req": 1, "sent": [[[[]]]] * 1_000})
    assert len(small) < m.SMALL_FRAME
    assert _reason_of(small) == "over_budget"


def test_a_large_frame_of_a_kind_without_a_manifest_is_refused_before_it_is_decoded() -> None:
    big = msgpack.packb({"v": V, "kind": "ping", "req": 1, "sent": 0.0, "pad": "x" * 4000 * 20})
    assert _reason_of(big) == "oversize"
    assert _reason_of(b"\x91" + b"\x00" * (m.SMALL_FRAME + 1)) == "bad_header"  # no "v" and "kind" first


def test_a_manifest_over_the_task_tensor_count_is_refused_before_validation() -> None:
    manifest = [{"name": f"t{i:05d}", "dtype": "float32", "shape": [1], "nbytes": 4} for i in range(50)]
    frame = _offer_header(manifest)
    assert isinstance(m.decode(frame), m.UpdateOffer)
    assert _reason_of(frame, max_tensors=10) == "too_many_tensors"
    big = _offer_header(manifest * 2000)  # 100 000 entries (duplicates: validation would refuse too)
    assert len(big) > m.SMALL_FRAME
    assert _reason_of(big, max_tensors=1000) == "oversize"  # bigger than 1000 entries can be


def test_an_honest_manifest_of_the_largest_size_fits_its_budgets() -> None:
    names = sorted(f"features.denseblock{i // 100}.layer{i:06d}.conv.weight" for i in range(20_000))
    manifest = [{"name": n, "dtype": "float32", "shape": [64, 32, 3, 3], "nbytes": 73728} for n in names]
    frame = _offer_header(manifest)
    assert len(frame) > m.SMALL_FRAME
    offer = m.decode(frame, max_tensors=20_000)
    assert isinstance(offer, m.UpdateOffer) and len(offer.manifest.tensors) == 20_000


def test_answers_are_read_the_same_on_both_transports() -> None:
    """`check_announce` and `secagg_body` serve ZeroMQ and libp2p alike: a refusal names the peer's reason,
    so a caller can retry `not_ready` and give up on anything else."""
    m.check_announce(m.Reply(1, True))
    with pytest.raises(PeerRejected, match="announce refused: busy"):
        m.check_announce(m.Reply(1, False, m.Refusal.BUSY))
    with pytest.raises(PeerRejected, match="announce refused: pong"):
        m.check_announce(m.Pong(1, 0.0))
    topic = next(iter(m.SecAggTopic))
    assert m.secagg_body(m.SecAggReply(1, b"body"), topic) == b"body"
    with pytest.raises(PeerRejected) as refused:
        m.secagg_body(m.Reply(1, False, m.Refusal.NOT_READY, "round 4"), topic)
    assert refused.value.reason == "not_ready" and "round 4" in str(refused.value)
    with pytest.raises(PeerRejected) as odd:
        m.secagg_body(m.Pong(1, 0.0), topic)
    assert odd.value.reason == "pong"
