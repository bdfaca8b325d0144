"""swarmd's messages and payloads on one libp2p stream (trio side), with the ZeroMQ path's limits.

A libp2p stream is one ordered, end-to-end encrypted (Noise, ended at the two sites: a relay forwards
ciphertext) byte stream per update or fetch, so the framing is small:
- a message: u32 big-endian length, then the msgpack header of `swarmd.transport.messages` (the same
  kinds, fields and checks as on ZeroMQ; its length is bounded before a byte of it is read);
- a payload: the tensor bytes cut into `chunk_size` chunks, each a u32 length and the raw chunk. The
  receiver grants credit (`Grant.credits`, cumulative, as on ZeroMQ) `window` chunks ahead, and the
  sender never runs ahead of it: so a relay, like the receiver, holds at most the window in flight.
The receiver writes each chunk into one preallocated buffer and hashes it as it lands; a chunk of the
wrong length, no byte for `stall_timeout` or bytes that do not hash to the digest end the transfer
with the same refusal as on ZeroMQ.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import trio
from libp2p.abc import INetStream

from swarmd import codec
from swarmd.codec import Manifest
from swarmd.errors import TransportError
from swarmd.transport import messages as m
from swarmd.transport.messages import Refusal

_LEN = struct.Struct(">I")


class StreamBroken(TransportError):
    """A libp2p stream ended early or broke the protocol; `reason` is the refusal it maps to."""

    def __init__(self, reason: Refusal, message: str) -> None:
        super().__init__(message)
        self.reason = reason


async def read_exact(
    stream: INetStream, n: int, into: memoryview | None = None, stall: float = math.inf
) -> memoryview:
    """Exactly `n` bytes (into `into` when given); StreamBroken(disconnected) on an early end,
    StreamBroken(stalled) when no byte came for `stall` seconds (progress, not the whole read: a 4 MiB
    chunk through a relay on a slow uplink takes longer than a leader's stall timeout)."""
    buf = into if into is not None else memoryview(bytearray(n))
    got = 0
    while got < n:
        try:
            with trio.move_on_after(stall) as waited:
                data = await stream.read(n - got)
        except Exception as exc:  # noqa: BLE001 - libp2p raises many stream errors; all mean "gone"
            raise StreamBroken(Refusal.DISCONNECTED, f"stream ended: {type(exc).__name__}") from None
        if waited.cancelled_caught:
            raise StreamBroken(Refusal.STALLED, f"no bytes for {stall:.1f} s")
        if not data:
            raise StreamBroken(Refusal.DISCONNECTED, f"stream ended after {got} of {n} bytes")
        buf[got : got + len(data)] = data
        got += len(data)
    return buf


async def write(stream: INetStream, data: bytes) -> None:
    try:
        await stream.write(data)
    except Exception as exc:  # noqa: BLE001 - see read_exact
        raise StreamBroken(Refusal.DISCONNECTED, f"stream write failed: {type(exc).__name__}") from None


async def send_msg(stream: INetStream, msg: m.Message) -> int:
    frame = m.encode(msg)
    await write(stream, _LEN.pack(len(frame)) + frame)
    return len(frame) + _LEN.size


async def recv_msg(stream: INetStream, max_tensors: int) -> m.Message:
    """The next message; its length is bounded by its kind's limit before it is read."""
    (n,) = _LEN.unpack(await read_exact(stream, _LEN.size))
    if n > m.max_header("update", max_tensors):
        raise StreamBroken(Refusal.BAD_STREAM, f"a header of {n} bytes is over the limit")
    try:
        return m.decode(bytes(await read_exact(stream, n)), max_tensors)
    except m.BadMessage as exc:
        raise StreamBroken(Refusal.BAD_STREAM, f"{exc.reason}: {exc}") from None


async def expect(stream: INetStream, kind: type[m.Message], max_tensors: int) -> m.Message:
    msg = await recv_msg(stream, max_tensors)
    if not isinstance(msg, kind | m.Reply):
        raise StreamBroken(Refusal.BAD_STREAM, f"expected {kind.KIND}, got {msg.KIND}")
    return msg


def _chunks(frames: Sequence[memoryview], chunk_size: int) -> list[bytes]:
    flat = b"".join(bytes(f.cast("B")) if f.ndim != 1 or f.format != "B" else f for f in frames)
    return [flat[i : i + chunk_size] for i in range(0, len(flat), chunk_size)]


async def send_payload(
    stream: INetStream, frames: Sequence[memoryview], chunk_size: int, stall_timeout: float, upto: int = 0
) -> int:
    """Send the payload within the receiver's credit (`upto`: what its first grant gave); bytes written."""
    sent = 0
    for seq, chunk in enumerate(_chunks(frames, chunk_size)):
        while upto <= seq:
            with trio.move_on_after(stall_timeout) as waited:
                grant = await recv_msg(stream, 64)
            if waited.cancelled_caught:
                raise StreamBroken(Refusal.STALLED, f"no credit for {stall_timeout:.0f} s")
            if isinstance(grant, m.Reply):  # the receiver gave up mid-stream
                raise StreamBroken(grant.reason or Refusal.BAD_STREAM, grant.detail)
            if not isinstance(grant, m.Grant):
                raise StreamBroken(Refusal.BAD_STREAM, f"expected a grant, got {grant.KIND}")
            upto = max(upto, grant.credits)
        await write(stream, _LEN.pack(len(chunk)) + chunk)
        sent += len(chunk) + _LEN.size
    return sent


async def recv_payload(
    stream: INetStream, manifest: Manifest, sid: bytes, chunk_size: int, window: int, stall_timeout: float
) -> tuple[bytearray, bytes]:
    """Receive the payload of `manifest`, granting credit `window` chunks ahead; (buffer, content hash)."""
    total = manifest.total_nbytes
    buf = bytearray(total)
    view = memoryview(buf)
    hasher = codec.ContentHasher(manifest)
    n_chunks = -(-total // chunk_size)
    await send_msg(stream, m.Grant(req=0, sid=sid, credits=min(window, n_chunks)))
    for seq in range(n_chunks):
        want = min(chunk_size, total - seq * chunk_size)
        (n,) = _LEN.unpack(await read_exact(stream, _LEN.size, stall=stall_timeout))
        if n != want:
            raise StreamBroken(Refusal.BAD_STREAM, f"chunk_size: chunk {seq} of {n} bytes, expected {want}")
        piece = view[seq * chunk_size : seq * chunk_size + want]
        await read_exact(stream, want, piece, stall=stall_timeout)
        hasher.update(piece)
        if seq + window < n_chunks:
            await send_msg(stream, m.Grant(req=0, sid=sid, credits=seq + 1 + window))
    return buf, hasher.digest()
