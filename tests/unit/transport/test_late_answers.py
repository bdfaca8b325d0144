"""Answers on our connection to a peer: one to a request we already ended (timed out, withdrawn) is late
and dropped without counting against the peer; one to no request of ours is a rejection. Routine
refusals are counted as rejections too, but logged at info, not as warnings."""

from __future__ import annotations

import asyncio
import logging

import pytest

from swarmd.transport import Limits
from swarmd.transport import messages as m
from swarmd.transport.client import LATE_WINDOW, Client, _Conn
from swarmd.transport.context import Context
from swarmd.transport.flow import Flows
from swarmd.transport.handler import PeerId
from swarmd.transport.loop import Received

PEER = PeerId(b"\x05" * 32)


def _answer(client: Client, conn: _Conn, req: int) -> None:
    received = Received(route=None, peer=PEER, msg=m.Pong(req, 0.0), data=[])
    client._on_answer(conn, received, via_bulk=False)


def test_a_late_answer_is_dropped_quietly_and_a_stray_one_is_rejected() -> None:
    ctx = Context(handler=None, limits=Limits(), max_bytes=1, bulk_mode="aead", public=b"", secret=b"")  # type: ignore[arg-type]
    client = Client(ctx, Flows(ctx))
    conn = _Conn(PEER, "tcp://127.0.0.1:1", control=None, mon=None)  # type: ignore[arg-type]
    for req in range(1, LATE_WINDOW + 2):
        conn.pending[req] = asyncio.Queue()
        conn.finish(req)
    _answer(client, conn, LATE_WINDOW + 1)
    _answer(client, conn, 2)
    assert ctx.stats.late_answers == 2
    for stray in (1, LATE_WINDOW + 5):  # out of the window, or never asked
        with pytest.raises(m.BadMessage, match="no request of ours"):
            _answer(client, conn, stray)
    conn.pending[9_999] = asyncio.Queue()
    _answer(client, conn, 9_999)  # a pending request gets its answer
    assert conn.pending[9_999].get_nowait().req == 9_999


def test_routine_refusals_are_counted_and_logged_at_info_the_rest_at_warning(caplog) -> None:
    ctx = Context(handler=None, limits=Limits(), max_bytes=1, bulk_mode="aead", public=b"", secret=b"")  # type: ignore[arg-type]
    with caplog.at_level(logging.INFO, logger="swarmd.transport"):
        ctx.reject("not_ready", PEER, "no exchange open for that round and term")
        ctx.reject("cancelled", PEER, "fetch abandoned")
        ctx.reject("bad_header", PEER, "message without a header frame")
    assert ctx.stats.rejections == {"not_ready": 1, "cancelled": 1, "bad_header": 1}
    levels = [(r.levelname, r.getMessage().split(": ")[1].split(" ")[0]) for r in caplog.records]
    assert levels == [("INFO", "not_ready"), ("INFO", "cancelled"), ("WARNING", "bad_header")]
