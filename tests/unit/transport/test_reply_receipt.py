"""A receipt rides on the reply to an update as an optional field: a reply without one is byte for byte
what a node without receipts sends (and such a reply decodes to receipt=None), a reply with one round
trips, and anything but 65 bytes there is refused as a bad field. The server sends a handler's receipt
only with an acceptance, and only when it has the wire's shape."""

from __future__ import annotations

import msgpack
import pytest

from swarmd.transport import Refusal, Verdict
from swarmd.transport import messages as m
from swarmd.transport.server import _update_reply

V = m.PROTOCOL_VERSION
SIG = bytes(range(65))


def _frame(**fields: object) -> bytes:
    return msgpack.packb({"v": V, "kind": "reply", **fields}, use_bin_type=True)


def test_a_reply_without_a_receipt_is_the_old_header_and_decodes_to_none() -> None:
    old = _frame(req=7, ok=True, reason=None, detail="")
    assert m.encode(m.Reply(7, True)) == old
    reply = m.decode(old)
    assert isinstance(reply, m.Reply) and reply.receipt is None


def test_a_reply_with_a_receipt_round_trips_and_stays_a_small_frame() -> None:
    msg = m.Reply(7, True, None, "x" * m.MAX_TEXT, SIG)
    frame = m.encode(msg)
    assert m.decode(frame) == msg and len(frame) <= m.SMALL_FRAME


@pytest.mark.parametrize("receipt", [b"", bytes(64), bytes(66), "0x" + "00" * 65, 65, [1] * 65])
def test_a_receipt_of_any_other_shape_is_a_bad_field(receipt: object) -> None:
    with pytest.raises(m.BadMessage) as err:
        m.decode(_frame(req=1, ok=True, reason=None, detail="", receipt=receipt))
    assert err.value.reason == "bad_field"


def test_only_optional_fields_may_be_missing() -> None:
    with pytest.raises(m.BadMessage, match="fields") as err:
        m.decode(_frame(req=1, ok=True, reason=None))  # detail is not optional
    assert err.value.reason == "bad_field"
    with pytest.raises(m.BadMessage) as err:
        m.decode(msgpack.packb({"v": V, "kind": "ping", "req": 1}, use_bin_type=True))
    assert err.value.reason == "bad_field"


def test_the_server_sends_a_receipt_only_with_an_acceptance_of_the_right_shape(caplog) -> None:
    assert _update_reply(3, Verdict(True, receipt=SIG)).receipt == SIG
    refused = _update_reply(3, Verdict(False, Refusal.INVALID, "norm", receipt=SIG))
    assert refused.receipt is None and refused.reason is Refusal.INVALID
    bad = _update_reply(3, Verdict(True, receipt=SIG[:64]))  # a handler bug must not cost the acceptance
    assert bad.ok and bad.receipt is None and "not 65 bytes" in caplog.text
    assert m.decode(m.encode(bad)) == m.Reply(3, True)
