"""The bulk channel's wire format: fixed-layout headers parsed with `struct`, never msgpack.

The bulk ROUTER is plain TCP that anyone who reaches the port can connect to, so what arrives there
must cost O(1) before it is proven to belong to an authenticated stream. Two messages only:

    chunk  [head, sealed]   head = magic "SB" | version u8 (4) | kind 1 | sid 16 B | seq u64 (28 bytes)
                            sealed = AES-256-GCM(stream key, nonce = seq as 12 bytes LE,
                            associated data = head): the chunk's bytes plus a 16-byte tag
    grant  [head || tag]    head as above with kind 2 and the stream's cumulative credit `upto` in
                            place of seq; tag = the same AEAD over no plaintext, nonce = upto as
                            8 bytes LE + 00 00 00 80 (never a chunk's nonce), associated data = head

All integers are big-endian in the head. The version is the bulk channel's own (`BULK_VERSION`): 3
was the same layout sealed with ChaCha20-Poly1305, so a node of either version counts the other's
bulk frames as `bulk_version` instead of failing their tags. The parser checks only the frame count,
the lengths, the magic, the version and the kind; the stream id is then one dict lookup
(`unknown_stream` if it names no open stream), and the seal is the proof that the frame comes from
the stream's other end.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from swarmd.transport.messages import BadMessage

MAGIC = b"SB"
BULK_VERSION = 4  # 4: AES-256-GCM; 3: ChaCha20-Poly1305 (control protocol version 3 throughout)
KIND_CHUNK = 1
KIND_GRANT = 2
SID_SIZE = 16
TAG_SIZE = 16
_HEAD = struct.Struct(">2sBB16sQ")
HEAD_SIZE = _HEAD.size  # 28
GRANT_SIZE = HEAD_SIZE + TAG_SIZE


@dataclass(frozen=True)
class BulkChunk:
    sid: bytes
    seq: int
    sealed: memoryview  # ciphertext and tag; opened against the stream's key by stream.Inbound


@dataclass(frozen=True)
class BulkGrant:
    sid: bytes
    upto: int  # the receiver now allows chunks 0 .. upto-1 in all
    head: bytes
    tag: bytes


def head(kind: int, sid: bytes, n: int) -> bytes:
    return _HEAD.pack(MAGIC, BULK_VERSION, kind, sid, n)


def chunk_head(sid: bytes, seq: int) -> bytes:
    return head(KIND_CHUNK, sid, seq)


def grant_nonce(upto: int) -> bytes:
    return upto.to_bytes(8, "little") + b"\x00\x00\x00\x80"


def max_frame(chunk_size: int) -> int:
    """The bulk sockets' `maxmsgsize`: a sealed chunk, the largest frame the channel carries."""
    return max(chunk_size + TAG_SIZE, GRANT_SIZE)


def parse(frames: list[memoryview]) -> BulkChunk | BulkGrant:
    """One bulk message (without its routing id); raise BadMessage naming what is malformed."""
    if not frames or len(frames) > 2:
        raise BadMessage("bulk_frames", f"bulk message of {len(frames)} frames")
    first = frames[0]
    if len(first) not in (HEAD_SIZE, GRANT_SIZE):
        raise BadMessage("bulk_length", f"bulk header of {len(first)} bytes")
    magic, version, kind, sid, n = _HEAD.unpack_from(first)
    if magic != MAGIC:
        raise BadMessage("bulk_magic", "not a bulk header")
    if version != BULK_VERSION:
        raise BadMessage("bulk_version", f"bulk version {version}, this node speaks {BULK_VERSION}")
    if kind == KIND_CHUNK and len(first) == HEAD_SIZE and len(frames) == 2:
        return BulkChunk(sid, n, frames[1])
    if kind == KIND_GRANT and len(first) == GRANT_SIZE and len(frames) == 1:
        raw = bytes(first)
        return BulkGrant(sid, n, raw[:HEAD_SIZE], raw[HEAD_SIZE:])
    if kind not in (KIND_CHUNK, KIND_GRANT):
        raise BadMessage("bulk_kind", f"unknown bulk kind {kind}")
    raise BadMessage(
        "bulk_frames", f"bulk kind {kind} with {len(frames)} frames and a {len(first)}-byte header"
    )
