"""Chunked streams: the sender's chunker and credit counter, the receiver's preallocated buffer.

A stream carries one encoded state dict (tensor bytes back to back in manifest order) from a
sender to a receiver in chunks of `chunk_size` bytes (the last may be shorter). The receiver grants
credits; the sender never has more chunks in flight than it was granted. The receiver writes each
chunk straight into one preallocated buffer and hashes it as it lands, so its memory is one payload
plus the chunks in flight, whatever the number of senders.

Bulk encryption (see docs/transport.md and bulk.py): with a session key, each chunk is one
AES-256-GCM ciphertext, nonce = seq, associated data = the chunk's fixed-layout bulk header (which
holds sid and seq), so a chunk cannot be replayed, reordered or moved to another stream; the later
credit grants are sealed under the same key and carry the cumulative credit, so a replayed grant
grants nothing. The key is random per stream and travels over the CURVE channel. Without a key the
chunk's frames and the grants go over the CURVE channel itself.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import mmap
import os
import threading
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor

import torch
import zmq
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from swarmd.aio import wait_within
from swarmd.codec import ContentHasher, Manifest, digest_against
from swarmd.transport import bulk
from swarmd.transport import messages as m
from swarmd.transport.bulk import SID_SIZE, TAG_SIZE
from swarmd.transport.messages import BadMessage

__all__ = [
    "SID_SIZE",
    "TAG_SIZE",
    "Inbound",
    "Outbound",
    "SealBuffers",
    "chunk_count",
    "iter_chunks",
    "new_key",
    "new_sid",
]

# The content hash releases the GIL, so hashing on worker threads overlaps with receiving and decrypting
# the next chunk on the event loop. A worker per core (two at least): a leader taking several updates at
# once hashes them side by side, and a busy core hashes slower than a fast link delivers. `_InOrder` keeps
# each stream's chunks in order.
_HASHER = ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 1), thread_name_prefix="swarmd-hash")


_HUGE = 2 << 20  # a transparent huge page


def payload_buffer(total: int) -> torch.Tensor:
    """A fresh, writable byte buffer for a received payload, backed by transparent huge pages where
    the kernel has them: first touch of fresh 4 KiB pages (fault, zero, charge) cost the receiver
    ~0.35 CPU-s per GB, as much as decrypting; 2 MiB pages take a quarter of that (measured)."""
    if total < _HUGE or not hasattr(mmap, "MADV_HUGEPAGE"):
        return torch.empty(total, dtype=torch.uint8)
    region = mmap.mmap(-1, total, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # THP disabled ("never"): ordinary pages
        region.madvise(mmap.MADV_HUGEPAGE)
    return torch.frombuffer(region, dtype=torch.uint8)  # the tensor keeps the mapping alive


class SealBuffers:
    """Ciphertext buffers reused from chunk to chunk, one set per node (all use is on its event loop).

    Sealing into a new 4 MiB bytes object each chunk cost an allocation, a zero fill and the page
    faults of fresh memory, about as much as the cipher itself. A lent buffer comes back (`give_back`)
    with the tracker of the zero-copy send that carries it and is reused only once libzmq has released
    that message: until then its I/O thread may still be writing it to the socket. At most `keep` idle
    buffers stay resident (a window of 4 chunks in flight needs about 5)."""

    def __init__(self, keep: int = 8) -> None:
        self.keep = keep
        self.size = 0  # every buffer is one sealed full chunk; a shorter last chunk uses a prefix
        self._idle: list[bytearray] = []
        self._sending: list[tuple[bytearray, zmq.MessageTracker]] = []
        self._lent: dict[int, bytearray] = {}
        self._stage: bytearray | None = None

    def take(self, size: int) -> bytearray:
        if size != self.size:  # another chunk size (set_limits): start over
            self.size, self._idle, self._sending, self._stage = size, [], [], None
        self._reap()
        buf = self._idle.pop() if self._idle else bytearray(size)
        if len(self._lent) >= 4 * self.keep:  # sends that failed never gave theirs back
            self._lent.clear()
        self._lent[id(buf)] = buf
        return buf

    def give_back(self, frame: object, tracker: zmq.MessageTracker | None) -> None:
        """Return the buffer under `frame` (a view of one we lent) once `tracker` says it was sent."""
        buf = getattr(frame, "obj", None)
        if self._lent.pop(id(buf), None) is not buf or tracker is None or not isinstance(buf, bytearray):
            return
        if len(self._sending) < 4 * self.keep:
            self._sending.append((buf, tracker))

    def stage(self, size: int) -> bytearray:
        """One scratch buffer to gather a chunk that spans several tensors (sealing is synchronous)."""
        if self._stage is None or len(self._stage) < size:
            self._stage = bytearray(size)
        return self._stage

    def _reap(self) -> None:
        sending = []
        for buf, tracker in self._sending:
            if not tracker.done:
                sending.append((buf, tracker))
            elif len(self._idle) < self.keep and len(buf) == self.size:
                self._idle.append(buf)
        self._sending = sending


def new_sid() -> bytes:
    return os.urandom(SID_SIZE)


def new_key() -> bytes:
    return AESGCM.generate_key(256)


def _aead(key: bytes | None) -> AESGCM | None:
    """The bulk cipher of a stream: AES-256-GCM (bulk version 4). On CPUs with AES-NI/VAES it seals at
    ~11 GB/s a core against ChaCha20-Poly1305's ~3.5 (measured here), a third of the CPU per byte."""
    return AESGCM(key) if key else None


def _nonce(seq: int) -> bytes:
    return seq.to_bytes(12, "little")


def chunk_count(total: int, chunk_size: int) -> int:
    return -(-total // chunk_size)


def iter_chunks(frames: Sequence[memoryview], chunk_size: int) -> Iterator[list[memoryview]]:
    """Split back-to-back frames into chunks of `chunk_size` bytes; each chunk is a list of slices."""
    pieces: list[memoryview] = []
    room = chunk_size
    for frame in frames:
        view = memoryview(frame).cast("B")
        while len(view):
            take = view[:room]
            pieces.append(take)
            view = view[len(take) :]
            room -= len(take)
            if room == 0:
                yield pieces
                pieces, room = [], chunk_size
    if pieces:
        yield pieces


class Outbound:
    """Sender side: counts credits and seals chunks."""

    def __init__(self, sid: bytes, peer: bytes, key: bytes | None) -> None:
        self.sid = sid
        self.peer = peer
        self._aead = _aead(key)
        self._allowed = 0  # chunks the receiver allows in all (cumulative credit)
        self._taken = 0
        self._wake = asyncio.Event()
        self.failed: str | None = None  # set when the receiver gave up; stops the pump
        self.route: bytes | None = None  # bulk routing id of the receiver, when it sends grants there

    def grant(self, n: int) -> None:
        self._allowed += n
        self._wake.set()

    def grant_sealed(self, g: bulk.BulkGrant) -> None:
        """A sealed grant from the bulk channel: raise BadMessage unless our key sealed it."""
        if self._aead is None:
            raise BadMessage("unknown_stream", "a sealed grant for a stream over CURVE")
        try:
            self._aead.decrypt(bulk.grant_nonce(g.upto), g.tag, g.head)
        except InvalidTag as exc:
            raise BadMessage("auth_failed", "a bulk grant failed authentication") from exc
        if g.upto > self._allowed:  # a replayed (older) grant grants nothing
            self._allowed = g.upto
            self._wake.set()

    def fail(self, reason: str) -> None:
        self.failed = reason
        self._wake.set()

    async def take(self, timeout: float) -> None:
        """Wait for one credit; raise TimeoutError if none comes, BadMessage if the receiver failed."""
        while self._taken >= self._allowed and self.failed is None:
            self._wake.clear()
            await wait_within(self._wake.wait(), timeout)
        if self.failed is not None:
            raise BadMessage(self.failed, f"receiver ended the stream: {self.failed}")
        self._taken += 1

    @property
    def sealed(self) -> bool:
        return self._aead is not None

    def seal(
        self, seq: int, pieces: list[memoryview], buffers: SealBuffers | None = None, chunk_size: int = 0
    ) -> list[bytes | memoryview]:
        """The payload frames of chunk `seq`: one ciphertext with a key, else the pieces themselves.
        With `buffers`, the ciphertext is a view of one of theirs (give it back after the send)."""
        if self._aead is None:
            return list(pieces)
        n = sum(len(p) for p in pieces)
        data: memoryview | bytes = pieces[0]
        if len(pieces) > 1:
            if buffers is None:
                data = b"".join(pieces)
            else:
                data = memoryview(buffers.stage(n))[:n]
                pos = 0
                for p in pieces:
                    data[pos : pos + len(p)] = p
                    pos += len(p)
        head = bulk.chunk_head(self.sid, seq)
        if buffers is None:
            return [self._aead.encrypt(_nonce(seq), data, head)]
        out = memoryview(buffers.take(max(chunk_size, n) + TAG_SIZE))[: n + TAG_SIZE]
        self._aead.encrypt_into(_nonce(seq), data, head, out)
        return [out]

    def frames(
        self, seq: int, pieces: list[memoryview], buffers: SealBuffers | None = None, chunk_size: int = 0
    ) -> list[bytes | memoryview]:
        """The whole message of chunk `seq`: bulk layout when sealed, a control header when not."""
        head = bulk.chunk_head(self.sid, seq) if self._aead else m.encode(m.Chunk(self.sid, seq))
        return [head, *self.seal(seq, pieces, buffers, chunk_size)]


class _InOrder:
    """One stream's chunks fed to its hasher in arrival order on the shared pool: at most one worker
    drains a stream at a time, so streams hash in parallel and each one in order."""

    def __init__(self, hasher: ContentHasher) -> None:
        self._hasher = hasher
        self._pending: collections.deque[memoryview] = collections.deque()
        self._lock = threading.Lock()
        self._draining: Future[None] | None = None

    def add(self, data: memoryview) -> None:
        with self._lock:
            self._pending.append(data)
            if self._draining is None:
                self._draining = _HASHER.submit(self._drain)

    def _drain(self) -> None:
        while True:
            with self._lock:
                if not self._pending:
                    self._draining = None
                    return
                data = self._pending.popleft()
            try:
                self._hasher.update(data)
            except BaseException:
                with self._lock:  # the error reaches `caught_up` through this drain's future
                    self._pending.clear()
                    self._draining = None
                raise

    async def caught_up(self) -> None:
        """Until every chunk added so far is in the hash (raises what hashing raised)."""
        while True:
            with self._lock:
                draining = self._draining
            if draining is None:
                return
            await asyncio.wrap_future(draining)


class Inbound:
    """Receiver side: preallocated buffer, in-order chunk check, incremental hash, credit count."""

    def __init__(
        self, sid: bytes, peer: bytes, manifest: Manifest, chunk_size: int, key: bytes | None
    ) -> None:
        self.sid = sid
        self.peer = peer
        self.manifest = manifest
        self.chunk_size = chunk_size
        self.key = key
        self._aead = _aead(key)
        self.total = manifest.total_nbytes
        self.buffer = payload_buffer(self.total)
        self.view = self.buffer.numpy().data.cast("B")  # writable, flat: chunks land here
        self._hasher = ContentHasher(manifest)
        self._hashing = _InOrder(self._hasher)
        self.next_seq = 0
        self.offset = 0
        self.granted = 0
        self.last_progress = time.monotonic()
        self.done = asyncio.Event()
        self.wake = asyncio.Event()  # set on every chunk and on failure: the credit loop wakes up
        self.failed: str | None = None
        self.route: bytes | None = None  # routing id of the sender on the bulk socket, once seen
        self._watchers: list[asyncio.Future[None]] = []  # relays serving this stream onward (`landed`)
        if self.total == 0:
            self.done.set()

    @property
    def n_chunks(self) -> int:
        return chunk_count(self.total, self.chunk_size)

    def sealed_grant(self) -> bytes:
        """The bulk grant of everything granted so far (`granted`), sealed under the stream key."""
        if self._aead is None:
            raise BadMessage("unknown_stream", "a sealed grant for a stream over CURVE")
        head = bulk.head(bulk.KIND_GRANT, self.sid, self.granted)
        return head + self._aead.encrypt(bulk.grant_nonce(self.granted), b"", head)

    def credits_to_grant(self, window: int) -> int:
        """How many more chunks the sender may have in flight, up to `window` and the end."""
        want = min(self.next_seq + window, self.n_chunks) - self.granted
        return max(want, 0)

    def fail(self, reason: str) -> None:
        self.failed = reason
        self.done.set()
        self.wake.set()
        self._tell_watchers()

    async def landed(self, end: int, timeout: float) -> None:
        """Until the first `end` bytes are in the buffer: a site serving this stream onward while it
        arrives (cut-through) waits here. Raises BadMessage(upstream_failed) once the stream failed,
        or when no chunk lands for `timeout` seconds."""
        while True:
            if self.failed is not None:
                raise BadMessage(m.Refusal.UPSTREAM_FAILED, f"the relayed stream failed ({self.failed})")
            if self.offset >= end:
                return
            fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._watchers.append(fut)
            try:
                await wait_within(fut, timeout)
            except (TimeoutError, asyncio.TimeoutError):
                raise BadMessage(
                    m.Refusal.UPSTREAM_FAILED, f"the relayed stream made no progress for {timeout:.1f}s"
                ) from None

    def _tell_watchers(self) -> None:
        watchers, self._watchers = self._watchers, []
        for fut in watchers:
            if not fut.done():
                fut.set_result(None)

    def accept(self, seq: int, data: Sequence[memoryview | bytes]) -> None:
        """Write one chunk; raise BadMessage (reason label) on anything out of line."""
        if self.done.is_set():
            raise BadMessage("out_of_order", "chunk after the end of the stream")
        if seq != self.next_seq:
            raise BadMessage("out_of_order", f"chunk {seq}, expected {self.next_seq}")
        if seq >= self.granted:
            raise BadMessage("over_credit", f"chunk {seq} beyond the {self.granted} granted")
        size = min(self.chunk_size, self.total - self.offset)
        dest = self.view[self.offset : self.offset + size]
        if self._aead is not None:
            self._open(seq, data, dest)
        else:
            self._copy(data, dest)
        self._hashing.add(dest)
        self.offset += size
        self.next_seq += 1
        self.last_progress = time.monotonic()
        if self.offset == self.total:
            self.done.set()
        self.wake.set()
        self._tell_watchers()

    def _open(self, seq: int, data: Sequence[memoryview | bytes], dest: memoryview) -> None:
        if len(data) != 1 or len(data[0]) != len(dest) + TAG_SIZE:
            raise BadMessage("chunk_size", f"sealed chunk {seq} has the wrong size")
        try:
            self._aead.decrypt_into(_nonce(seq), data[0], bulk.chunk_head(self.sid, seq), dest)  # type: ignore[union-attr]
        except InvalidTag as exc:
            raise BadMessage("auth_failed", f"chunk {seq} failed authentication") from exc

    def _copy(self, data: Sequence[memoryview | bytes], dest: memoryview) -> None:
        if sum(len(d) for d in data) != len(dest):
            raise BadMessage(
                "chunk_size", f"chunk holds {sum(len(d) for d in data)} bytes, expected {len(dest)}"
            )
        pos = 0
        for d in data:
            dest[pos : pos + len(d)] = memoryview(d).cast("B")
            pos += len(d)

    async def digest(self) -> bytes:
        """The content hash of everything received, once hashing has caught up."""
        await self._hashing.caught_up()
        return self._hasher.digest()

    async def digest_against(self, name: bytes) -> bytes:
        """`digest()`, or the v1 hash of the same bytes where that is `name`: a model named before
        protocol 4 (`codec.digest_against`), hashed again on the pool only when the digest is not `name`."""
        digest = await self.digest()
        if digest == name:
            return digest
        again = _HASHER.submit(digest_against, self.manifest, [self.view], digest, name)
        return await asyncio.wrap_future(again)
