"""The libp2p payload framing's stall rule: a payload that keeps moving is taken however long one chunk
takes (a relayed chunk on a slow uplink), and one that stops for `stall_timeout` is `stalled`. The
stream is a faked boundary: bytes trickled through a trio memory channel."""

from __future__ import annotations

from typing import Any, cast

import pytest

pytest.importorskip("trio")

import torch
import trio

from swarmd import codec
from swarmd.transport.messages import Refusal
from swarmd.transport.p2p import wire

CHUNK = 64 * 1024


class TrickleStream:
    """A stream whose reads return what a sender task pushed; writes (the receiver's grants) are kept."""

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[bytes](1000)
        self.written: list[bytes] = []
        self.left = b""

    async def read(self, n: int) -> bytes:
        if not self.left:
            self.left = await self.recv.receive()
        out, self.left = self.left[:n], self.left[n:]
        return out

    async def write(self, data: bytes) -> None:
        self.written.append(data)


def _payload() -> tuple[codec.Manifest, bytes, bytes]:
    """A 2-chunk payload: its manifest, bytes and content hash."""
    manifest, frames = codec.encode({"w": torch.arange(CHUNK // 2, dtype=torch.float32)})
    return manifest, b"".join(bytes(f) for f in frames), codec.hash_frames(manifest, frames)


async def _trickle(stream: TrickleStream, data: bytes, pause: float, stop_after: int | None = None) -> None:
    framed = b"".join(
        wire._LEN.pack(len(c)) + c for c in (data[i : i + CHUNK] for i in range(0, len(data), CHUNK))
    )
    pieces = [framed[i : i + 8192] for i in range(0, len(framed), 8192)]
    for k, piece in enumerate(pieces):
        if stop_after is not None and k == stop_after:
            return
        await stream.send.send(piece)
        await trio.sleep(pause)


def _receive(pause: float, stall: float, stop_after: int | None = None) -> Any:
    manifest, data, _ = _payload()

    async def main() -> Any:
        stream = TrickleStream()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(_trickle, stream, data, pause, stop_after)
            try:
                return await wire.recv_payload(cast(Any, stream), manifest, b"s" * 16, CHUNK, 4, stall)
            except wire.StreamBroken as exc:
                return exc
            finally:
                nursery.cancel_scope.cancel()

    return trio.run(main)


def test_a_payload_that_keeps_moving_is_taken_though_one_chunk_takes_longer_than_the_stall_timeout() -> None:
    # 8 pieces per chunk, 0.03 s apart: ~0.25 s per chunk, against a stall timeout of 0.15 s
    buf, digest = _receive(pause=0.03, stall=0.15)
    assert len(buf) == CHUNK * 2 and digest == _payload()[2]


def test_a_payload_that_stops_is_stalled() -> None:
    broken = _receive(pause=0.0, stall=0.15, stop_after=5)  # stops mid-chunk
    assert isinstance(broken, wire.StreamBroken) and broken.reason is Refusal.STALLED, broken
