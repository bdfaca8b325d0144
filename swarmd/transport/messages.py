"""Wire messages of the swarmd transport: versioned frozen dataclasses with paired encode/decode.

Control channel only (the bulk channel speaks the fixed layout of bulk.py). Every ZeroMQ message is
`[header, *data]`: frame 0 is a msgpack map `{"v": 4, "kind": ..., fields}` whose first two keys are
"v" and "kind", the other frames (only for `chunk`) are raw payload bytes.

Decoding is bounded before it starts: a frame over 8 KiB must be an `update` or a `serve` (the only
kinds with a manifest; the first keys are read from its first bytes to tell) and within the size a
manifest of `max_tensors` tensors can have; msgpack's per-container limits cap each array at the
task's tensor count; and every array and map counts against a total budget proportional to the frame
(msgpack's own limits do not bound the total: nested empty arrays expand about 50x). Then every
field's type and range is checked, and a manifest longer than `max_tensors` is refused before it is
validated. Anything off raises `BadMessage` with a `reason` label the node counts in
`stats.rejections`.

Kinds (client = the side that sent the request over its DEALER; server = the ROUTER side):

    ping     c->s  req, sent                         liveness and round-trip time
    pong     s->c  req, sent
    announce c->s  req, round, model_hash            "I hold M_r"; answered by a reply
    update   c->s  req, round, term, digest, manifest, meta
                                                     offer to stream an update; answered by a grant
                                                     (stream opens) or a reply (refused)
    fetch    c->s  req, model_hash, max_bytes, key   ask for a model; answered by serve or a reply
    serve    s->c  req, sid, manifest, bulk_port, token
                                                     the fetch's stream opens; the client grants credit
    grant    r->s  req, sid, credits, key, bulk_port, token
                                                     the receiver of a stream allows `credits` more chunks;
                                                     the first grant carries the session key (or none
                                                     for chunks over the CURVE channel), bulk port and
                                                     the sender's bulk password (`token`);
                                                     later grants of a sealed stream are bulk.py's
    chunk    s->r  sid, seq  + payload frame(s)       one chunk of a stream over CURVE, in order (a
                                                     sealed stream's chunks are bulk.py's)
    cancel   c->s  sid, reason                       the update's sender gives up; the slot frees
    reply    s->c  req, ok, reason, detail[, receipt] final answer to an announce, update, fetch or
                                                     secagg; `reason` is a `Refusal` value (nil when
                                                     ok), `detail` free text for people, never parsed;
                                                     `receipt` (optional, only on an accepted update):
                                                     the leader's 65-byte signature over what it took
    secagg   c->s  req, round, topic, body           a secure-aggregation message (shares to a
                                                     neighbour, an unmask request to a survivor):
                                                     `body` is opaque bytes the privacy package reads;
                                                     answered by secagg_reply or a refusing reply
    secagg_reply s->c req, body                      the answer's opaque bytes
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

import msgpack

from swarmd.codec import MAX_NAME_LEN, MAX_NDIM, MAX_TENSORS, Manifest
from swarmd.errors import CodecError, PeerRejected, WireError

# 2: a reply's reason is a Refusal value, not free text; 3: bulk frames have a fixed layout (bulk.py),
# "v" and "kind" lead every control header; 4: content hashes are BLAKE3 (codec), so a node of 3 is
# refused as bad_version, not on every update as hash_mismatch
PROTOCOL_VERSION = 4
MAX_HEADER_BYTES = 16 << 20  # a manifest of MAX_TENSORS long names fits
# Every kind without a manifest fits (a reply's detail is at most MAX_TEXT); larger frames are manifests,
# decoded off the event loop. Small, so no frame decoded on the loop costs more than a fraction of a ms.
SMALL_FRAME = 8 << 10
MANIFEST_KINDS = frozenset({"update", "serve"})
# Secure-aggregation bodies (encrypted shares, share requests and answers) are one msgpack bin: a single
# allocation no larger than the frame, never an expansion, so a bigger bound is cheap to decode on the loop.
SECAGG_KINDS = frozenset({"secagg", "secagg_reply"})
MAX_SECAGG_BODY = 60 << 10
SECAGG_FRAME = MAX_SECAGG_BODY + 256
_SPEC_BYTES = MAX_NAME_LEN + 64 + 9 * MAX_NDIM  # the most one tensor's entry can take on the wire
MAX_META_ITEMS = 32
RECEIPT_BYTES = 65  # an ECDSA signature (r, s, v): the leader's delivery receipt (ledger/receipt.py)
MAX_TEXT = 4096
U63 = (1 << 63) - 1

MetaValue = int | float | str | bool


class Refusal(str, enum.Enum):
    """Why a receiver said no: the vocabulary of a reply's `reason`. A sender decides from it alone
    whether to try again; nothing reads the free-text detail."""

    def __str__(self) -> str:
        return self.value

    # The receiver is not ready or not free yet.
    NOT_READY = "not_ready"  # no exchange open for that round and term (yet)
    BUSY = "busy"  # too many offers waiting for the receive slot
    STREAM_CAP = "stream_cap"  # the sender already holds its share of streams
    # The stream or the connection broke on the way.
    STALLED = "stalled"
    CANCELLED = "cancelled"
    UNROUTABLE = "unroutable"
    DUPLICATE_STREAM = "duplicate_stream"
    BAD_STREAM = "bad_stream"  # a chunk broke the stream's order, credit, size or seal
    INTERNAL_ERROR = "internal_error"
    DISCONNECTED = "disconnected"  # local: the connection dropped while a request waited
    REFUSED = "refused"  # local: the peer's handshake refused us
    PEER_REMOVED = "peer_removed"  # local: the peer left the member set while a request waited
    # Answers about the update or model itself.
    DUPLICATE = "duplicate"  # the receiver already holds this sender's update for the term
    NOT_COMMITTER = "not_committer"  # the sender did not commit in this round
    WRONG_DIGEST = "wrong_digest"  # the offered digest is not the sender's commitment on chain
    NOT_MEMBER = "not_member"
    HASH_MISMATCH = "hash_mismatch"
    INVALID = "invalid"  # the update failed the receiver's validation; the detail names the check
    TOO_LARGE = "too_large"
    HANDLER_ERROR = "handler_error"
    NOT_FOUND = "not_found"  # a fetched model this site does not hold
    UPSTREAM_FAILED = "upstream_failed"  # a model served while it arrived: its own download failed
    NO_BULK_CHANNEL = "no_bulk_channel"
    PRIVACY_REFUSED = "privacy_refused"  # a secure-aggregation message was malformed or asked too much


class SecAggTopic(str, enum.Enum):
    """What a `secagg` message carries."""

    SHARES = "shares"  # a site's encrypted shares for one neighbour (before it commits)
    UNMASK = "unmask"  # the leader asks a survivor for the shares it needs to unmask the sum
    TRANSCRIPT = "transcript"  # an auditor asks a round's leader for its unmask transcript (body: its id)
    SHARDS = "shards"  # a sharded round's plan, status and leaf lists (transport/shards.py)


def as_refusal(label: str) -> Refusal:
    """A stream's failure label as a refusal: itself when it is one, else a broken stream."""
    try:
        return Refusal(label)
    except ValueError:
        return Refusal.BAD_STREAM


class BadMessage(WireError):
    """A peer message failed validation. `reason` is the counter label in `NodeStats.rejections`."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


# --- field validators: (value) -> value, raise BadMessage("bad_field") ------------------------------
def _fail(what: str) -> BadMessage:
    return BadMessage("bad_field", what)


def _uint(x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x <= U63:
        raise _fail(f"expected an unsigned integer, got {type(x).__name__}")
    return x


def _float(x: object) -> float:
    if isinstance(x, bool) or not isinstance(x, int | float) or not math.isfinite(x):
        raise _fail("expected a finite number")
    return float(x)


def _flag(x: object) -> bool:
    if not isinstance(x, bool):
        raise _fail("expected a boolean")
    return x


def _text(x: object) -> str:
    if not isinstance(x, str) or len(x) > MAX_TEXT:
        raise _fail("expected a short string")
    return x


def _refusal(x: object) -> Refusal:
    try:
        return Refusal(_text(x))
    except ValueError:
        raise _fail(f"unknown refusal reason {str(x)[:40]!r}") from None


def _bin(n: int) -> Callable[[object], bytes]:
    def check(x: object) -> bytes:
        if not isinstance(x, bytes) or len(x) != n:
            raise _fail(f"expected {n} bytes")
        return x

    return check


def _opt(inner: Callable[[object], Any]) -> Callable[[object], Any]:
    return lambda x: None if x is None else inner(x)


def _topic(x: object) -> SecAggTopic:
    try:
        return SecAggTopic(_text(x))
    except ValueError:
        raise _fail(f"unknown secagg topic {str(x)[:40]!r}") from None


def _body(x: object) -> bytes:
    if not isinstance(x, bytes) or not 0 < len(x) <= MAX_SECAGG_BODY:
        raise _fail(f"expected a body of 1 to {MAX_SECAGG_BODY} bytes")
    return x


def _manifest(x: object) -> Manifest:
    try:
        return Manifest.from_wire(x)
    except CodecError as exc:
        raise BadMessage("bad_manifest", str(exc)) from exc


def _meta(x: object) -> dict[str, MetaValue]:
    if not isinstance(x, dict) or len(x) > MAX_META_ITEMS:
        raise _fail(f"meta must be a map of at most {MAX_META_ITEMS} items")
    for k, v in x.items():
        _text(k)
        if not isinstance(v, int | float | str | bool):
            raise _fail("meta values must be scalars")
        if isinstance(v, str):
            _text(v)
        elif isinstance(v, int) and not isinstance(v, bool) and not -U63 <= v <= U63:
            raise _fail("meta integer out of range")
    return dict(x)


_b32 = _bin(32)
_b16 = _bin(16)


@dataclass(frozen=True)
class Message:
    """Base of all messages. Subclasses set KIND and list their validators in SCHEMA.

    A field in OPTIONAL was added after its kind first shipped: it is left off the wire while it is
    None (its default), so such a header is byte for byte what an older node sends, and a header
    without it decodes to the default."""

    KIND: ClassVar[str] = ""
    SCHEMA: ClassVar[dict[str, Callable[[object], Any]]] = {}
    OPTIONAL: ClassVar[frozenset[str]] = frozenset()

    def to_header(self) -> dict[str, Any]:
        out: dict[str, Any] = {"v": PROTOCOL_VERSION, "kind": self.KIND}
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in self.OPTIONAL:
                continue
            out[f.name] = value.to_wire() if isinstance(value, Manifest) else value
        return out


@dataclass(frozen=True)
class Ping(Message):
    KIND = "ping"
    req: int
    sent: float
    SCHEMA = {"req": _uint, "sent": _float}


@dataclass(frozen=True)
class Pong(Message):
    KIND = "pong"
    req: int
    sent: float
    SCHEMA = {"req": _uint, "sent": _float}


@dataclass(frozen=True)
class Announce(Message):
    KIND = "announce"
    req: int
    round: int
    model_hash: bytes
    SCHEMA = {"req": _uint, "round": _uint, "model_hash": _b32}


@dataclass(frozen=True)
class UpdateOffer(Message):
    KIND = "update"
    req: int
    round: int
    term: int
    digest: bytes  # the sender's content hash of the payload; the receiver checks the bytes against it
    manifest: Manifest
    meta: dict[str, MetaValue] = field(default_factory=dict)
    SCHEMA = {
        "req": _uint,
        "round": _uint,
        "term": _uint,
        "digest": _b32,
        "manifest": _manifest,
        "meta": _meta,
    }


@dataclass(frozen=True)
class Fetch(Message):
    KIND = "fetch"
    req: int
    model_hash: bytes
    max_bytes: int
    key: bytes | None  # AES-256-GCM key for the bulk channel (bulk.py); None: chunks over CURVE
    SCHEMA = {"req": _uint, "model_hash": _b32, "max_bytes": _uint, "key": _opt(_b32)}


@dataclass(frozen=True)
class Serve(Message):
    KIND = "serve"
    req: int
    sid: bytes
    manifest: Manifest
    bulk_port: int | None
    token: bytes | None = None  # the fetcher's password on our bulk port (PLAIN, checked by ZAP)
    SCHEMA = {"req": _uint, "sid": _b16, "manifest": _manifest, "bulk_port": _opt(_uint), "token": _opt(_b32)}


@dataclass(frozen=True)
class Grant(Message):
    KIND = "grant"
    req: int
    sid: bytes
    credits: int
    key: bytes | None = None
    bulk_port: int | None = None
    token: bytes | None = None  # the sender's password on our bulk port (PLAIN, checked by ZAP)
    SCHEMA = {
        "req": _uint,
        "sid": _b16,
        "credits": _uint,
        "key": _opt(_b32),
        "bulk_port": _opt(_uint),
        "token": _opt(_b32),
    }


@dataclass(frozen=True)
class Chunk(Message):
    KIND = "chunk"
    sid: bytes
    seq: int
    SCHEMA = {"sid": _b16, "seq": _uint}


@dataclass(frozen=True)
class Cancel(Message):
    """The sender of an update gives up mid-stream: the receiver frees the slot at once."""

    KIND = "cancel"
    sid: bytes
    reason: str
    SCHEMA = {"sid": _b16, "reason": _text}


@dataclass(frozen=True)
class Reply(Message):
    """Final answer to an announce, update or fetch; `reason` says why when not ok. `receipt`: the
    receiver's signed receipt for an update it accepted (opaque here; the daemon checks the signer)."""

    KIND = "reply"
    req: int
    ok: bool
    reason: Refusal | None = None
    detail: str = ""
    receipt: bytes | None = None
    SCHEMA = {
        "req": _uint,
        "ok": _flag,
        "reason": _opt(_refusal),
        "detail": _text,
        "receipt": _opt(_bin(RECEIPT_BYTES)),
    }
    OPTIONAL = frozenset({"receipt"})


@dataclass(frozen=True)
class SecAgg(Message):
    KIND = "secagg"
    req: int
    round: int
    topic: SecAggTopic
    body: bytes
    SCHEMA = {"req": _uint, "round": _uint, "topic": _topic, "body": _body}


@dataclass(frozen=True)
class SecAggReply(Message):
    KIND = "secagg_reply"
    req: int
    body: bytes
    SCHEMA = {"req": _uint, "body": _body}


KINDS: dict[str, type[Message]] = {
    m.KIND: m
    for m in (
        Ping,
        Pong,
        Announce,
        UpdateOffer,
        Fetch,
        Serve,
        Grant,
        Chunk,
        Cancel,
        Reply,
        SecAgg,
        SecAggReply,
    )
}


def encode(msg: Message) -> bytes:
    return msgpack.packb(msg.to_header(), use_bin_type=True)


def max_header(kind: str, max_tensors: int) -> int:
    """The largest header frame of `kind` this node decodes, for manifests of `max_tensors`."""
    if kind in SECAGG_KINDS:
        return SECAGG_FRAME
    if kind not in MANIFEST_KINDS:
        return SMALL_FRAME
    return min(MAX_HEADER_BYTES, SMALL_FRAME + max_tensors * _SPEC_BYTES)


def peek_kind(frame: bytes | memoryview) -> str:
    """The kind of a header from its first bytes alone ("v" and "kind" lead every header)."""
    u = msgpack.Unpacker(
        raw=False,
        max_buffer_size=64,
        max_str_len=64,
        max_bin_len=0,
        max_array_len=0,
        max_map_len=64,
        max_ext_len=0,
    )
    try:
        u.feed(bytes(frame[:64]))
        u.read_map_header()
        head = [u.unpack() for _ in range(4)]
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadMessage("bad_header", f"header does not start with v and kind: {exc}") from exc
    if head[0] != "v" or head[2] != "kind":
        raise BadMessage("bad_header", "header does not start with v and kind")
    if head[1] != PROTOCOL_VERSION:
        raise BadMessage("bad_version", f"protocol version {head[1]!r}, this node speaks {PROTOCOL_VERSION}")
    if not isinstance(head[3], str):
        raise BadMessage("unknown_kind", "kind is not a string")
    return head[3]


class _OverBudget(Exception):
    pass


class _Budget:
    """Counts the arrays and maps an unpack builds; raises once there are more than `left`."""

    __slots__ = ("left",)

    def __init__(self, left: int) -> None:
        self.left = left

    def count(self, obj: Any) -> Any:
        self.left -= 1
        if self.left < 0:
            raise _OverBudget
        return obj


def object_budget(nbytes: int) -> int:
    """How many arrays and maps a frame of `nbytes` may hold: an honest manifest has about one per
    17 bytes (a tensor's map and its shape), so one per 8 bytes is generous, and a bomb of empty
    arrays (one byte each) is cut off at an eighth of its claims."""
    return 64 + nbytes // 8


def _unpack(frame: bytes | memoryview, max_tensors: int = MAX_TENSORS) -> object:
    if len(frame) > MAX_HEADER_BYTES:
        raise BadMessage("bad_header", f"header of {len(frame)} bytes")
    budget = _Budget(object_budget(len(frame)))
    try:
        return msgpack.unpackb(
            frame,
            raw=False,
            strict_map_key=True,
            max_str_len=MAX_TEXT,
            max_bin_len=MAX_SECAGG_BODY,  # bounded by the frame; schemas check each bin's exact length
            max_array_len=max(max_tensors, 2 * MAX_NDIM),
            max_map_len=max(MAX_META_ITEMS, 16),
            max_ext_len=0,
            use_list=True,
            list_hook=budget.count,
            object_hook=budget.count,
        )
    except _OverBudget:
        raise BadMessage("over_budget", f"header of {len(frame)} bytes holds too many objects") from None
    except (ValueError, TypeError, msgpack.UnpackException) as exc:
        raise BadMessage("bad_header", f"undecodable header: {exc}") from exc


def decode(frame: bytes | memoryview, max_tensors: int = MAX_TENSORS) -> Message:
    """Parse and validate a header frame from a peer; raise BadMessage with a reason label.
    `max_tensors`: the most tensors a manifest may list (the task's count)."""
    if len(frame) > SMALL_FRAME:
        peeked = peek_kind(frame)
        if len(frame) > max_header(peeked, max_tensors):
            raise BadMessage("oversize", f"{peeked[:40]!r} header of {len(frame)} bytes")
    obj = _unpack(frame, max_tensors)
    if not isinstance(obj, dict):
        raise BadMessage("bad_header", "header is not a map")
    if obj.get("v") != PROTOCOL_VERSION:
        raise BadMessage(
            "bad_version", f"protocol version {obj.get('v')!r}, this node speaks {PROTOCOL_VERSION}"
        )
    kind = obj.get("kind")
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise BadMessage("unknown_kind", f"unknown message kind {str(obj.get('kind'))[:40]!r}")
    body = {k: v for k, v in obj.items() if k not in ("v", "kind")}
    if not set(cls.SCHEMA) - cls.OPTIONAL <= set(body) <= set(cls.SCHEMA):
        raise BadMessage("bad_field", f"{cls.KIND}: fields {sorted(map(str, body))} != {sorted(cls.SCHEMA)}")
    manifest = body.get("manifest")
    if isinstance(manifest, list) and len(manifest) > max_tensors:
        raise BadMessage("too_many_tensors", f"manifest of {len(manifest)} tensors, limit {max_tensors}")
    return cls(**{name: check(body[name]) for name, check in cls.SCHEMA.items() if name in body})


def check_announce(answer: Message) -> None:
    """An announce's answer, on either transport: a refusal raises PeerRejected."""
    if not isinstance(answer, Reply) or not answer.ok:
        raise PeerRejected(f"announce refused: {getattr(answer, 'reason', answer.KIND)}")


def secagg_body(answer: Message, topic: SecAggTopic) -> bytes:
    """A secure-aggregation answer's body, on either transport; a refusal raises PeerRejected with the
    peer's reason, so the caller can tell "not ready yet" from a real refusal."""
    if isinstance(answer, SecAggReply):
        return answer.body
    reason = answer.reason if isinstance(answer, Reply) else answer.KIND
    detail = answer.detail if isinstance(answer, Reply) else ""
    raise PeerRejected(f"secagg {topic.value} refused: {reason} {detail}".strip(), reason=str(reason))
