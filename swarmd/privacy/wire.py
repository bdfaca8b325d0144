"""The three secure-aggregation messages and their msgpack forms, decoded under strict limits.

- `ShareMsg` (site -> neighbour, direct): a ChaCha20Poly1305 ciphertext of the recipient's shares.
- `RevealRequest` (leader -> survivor): what the survivor must reveal, bound to (round, term, leader).
- `RevealResponse` (survivor -> leader): the shares and pair seeds asked for.

Each decoder refuses anything but exactly its keys with exactly their types and sizes, and raises the
error class it is given (BadShare, BadRequest, BadResponse) with a stable reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import msgpack

from swarmd.privacy.errors import SecAggError
from swarmd.privacy.params import KEY_SIZE, MAX_SITES, site_id
from swarmd.privacy.shamir import SHARE_SIZE

VERSION = 1
MAX_SHARE_MSG = 1024
MAX_REQUEST = 5 * MAX_SITES * 48 + 1024
MAX_RESPONSE = MAX_SITES * (2 * (SHARE_SIZE + 48) + KEY_SIZE + 48) + 1024
NONCE_SIZE = 12
_U63 = 1 << 63

ErrorType = type[SecAggError]


def _unpack(raw: object, limit: int, err: ErrorType) -> dict[str, Any]:
    if not isinstance(raw, bytes | bytearray | memoryview) or len(raw) > limit:
        raise err("malformed", f"message must be bytes of at most {limit}")
    try:
        obj = msgpack.unpackb(
            raw, raw=False, strict_map_key=True, max_bin_len=limit,
            max_str_len=64, max_array_len=MAX_SITES, max_map_len=MAX_SITES,
        )  # fmt: skip
    except (ValueError, TypeError, msgpack.UnpackException):
        raise err("malformed", "not a msgpack message") from None
    if not isinstance(obj, dict):
        raise err("malformed", "message must be a map")
    return obj


def _keys(obj: dict[str, Any], expected: tuple[str, ...], err: ErrorType) -> None:
    if set(obj) != set(expected) or len(obj) != len(expected):
        raise err("malformed", f"message keys must be exactly {expected}")
    if obj["v"] != VERSION or type(obj["v"]) is not int:
        raise err("version", f"unknown message version {obj['v']!r}")


def _int(value: object, name: str, err: ErrorType) -> int:
    if type(value) is not int or not 0 <= value < _U63:
        raise err("malformed", f"{name} must be an int in [0, 2^63)")
    return value


def _bin(value: object, size: int, name: str, err: ErrorType) -> bytes:
    if type(value) is not bytes or len(value) != size:
        raise err("malformed", f"{name} must be {size} bytes")
    return value


def _site(value: object, name: str, err: ErrorType) -> str:
    try:
        return site_id(value)
    except SecAggError:
        raise err("malformed", f"{name} must be a 0x address") from None


def _sites(value: object, name: str, err: ErrorType) -> tuple[str, ...]:
    if type(value) is not list:
        raise err("malformed", f"{name} must be a list of addresses")
    out = tuple(_site(v, name, err) for v in value)
    if list(out) != sorted(set(out)):
        raise err("malformed", f"{name} must be sorted and without duplicates")
    return out


def _site_map(value: object, size: int, name: str, err: ErrorType) -> dict[str, bytes]:
    if type(value) is not dict:
        raise err("malformed", f"{name} must be a map")
    return {_site(k, name, err): _bin(v, size, name, err) for k, v in value.items()}


def _pack(obj: dict[str, Any]) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


@dataclass(frozen=True)
class ShareMsg:
    round: int
    sender: str
    recipient: str
    view: bytes
    nonce: bytes
    ct: bytes

    _KEYS = ("v", "round", "sender", "recipient", "view", "nonce", "ct")

    def aad(self) -> bytes:
        """Authenticated with the ciphertext: r | i | j | view (a share is bound to all four)."""
        return self.round.to_bytes(8, "big") + bytes.fromhex(self.sender[2:] + self.recipient[2:]) + self.view

    def to_bytes(self) -> bytes:
        return _pack({"v": VERSION, **{k: getattr(self, k) for k in self._KEYS[1:]}})

    @classmethod
    def from_bytes(cls, raw: object, err: ErrorType) -> ShareMsg:
        o = _unpack(raw, MAX_SHARE_MSG, err)
        _keys(o, cls._KEYS, err)
        if type(o["ct"]) is not bytes or len(o["ct"]) > MAX_SHARE_MSG:
            raise err("malformed", "ct must be bytes")
        return cls(
            _int(o["round"], "round", err), _site(o["sender"], "sender", err),
            _site(o["recipient"], "recipient", err), _bin(o["view"], 32, "view", err),
            _bin(o["nonce"], NONCE_SIZE, "nonce", err), o["ct"],
        )  # fmt: skip


def pack_shares(x: int, b: bytes, c: bytes) -> bytes:
    """The plaintext of a ShareMsg: the holder's x and its shares of b and of c_sk."""
    return _pack({"x": x, "b": b, "c": c})


def unpack_shares(raw: bytes, err: ErrorType) -> tuple[int, bytes, bytes]:
    o = _unpack(raw, MAX_SHARE_MSG, err)
    if set(o) != {"x", "b", "c"}:
        raise err("malformed", "share plaintext keys must be exactly x, b, c")
    return _int(o["x"], "x", err), _bin(o["b"], SHARE_SIZE, "b", err), _bin(o["c"], SHARE_SIZE, "c", err)


@dataclass(frozen=True)
class RevealRequest:
    """Leader -> survivor: the round's survivors and dropped, and exactly what this survivor must reveal:
    its shares of b for `b` (survivors), of c_sk for `c` (dropped and absent neighbours), and its own pair
    seeds with its absent neighbours for `pair`."""

    round: int
    term: int
    leader: str
    recipient: str
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    b: tuple[str, ...]
    c: tuple[str, ...]
    pair: tuple[str, ...]

    _KEYS = ("v", "round", "term", "leader", "recipient", "survivors", "dropped", "b", "c", "pair")

    def to_bytes(self) -> bytes:
        body = {k: getattr(self, k) for k in self._KEYS[1:]}
        return _pack({"v": VERSION, **{k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}})

    @classmethod
    def from_bytes(cls, raw: object, err: ErrorType) -> RevealRequest:
        o = _unpack(raw, MAX_REQUEST, err)
        _keys(o, cls._KEYS, err)
        lists = [_sites(o[k], k, err) for k in cls._KEYS[5:]]
        return cls(
            _int(o["round"], "round", err), _int(o["term"], "term", err),
            _site(o["leader"], "leader", err), _site(o["recipient"], "recipient", err), *lists,
        )  # fmt: skip


@dataclass(frozen=True)
class RevealResponse:
    round: int
    term: int
    leader: str
    sender: str
    b: dict[str, bytes]
    c: dict[str, bytes]
    pair: dict[str, bytes]

    _KEYS = ("v", "round", "term", "leader", "sender", "b", "c", "pair")

    def to_bytes(self) -> bytes:
        return _pack({"v": VERSION, **{k: getattr(self, k) for k in self._KEYS[1:]}})

    @classmethod
    def from_bytes(cls, raw: object, err: ErrorType) -> RevealResponse:
        o = _unpack(raw, MAX_RESPONSE, err)
        _keys(o, cls._KEYS, err)
        sized: Callable[[str, int], dict[str, bytes]] = lambda k, n: _site_map(o[k], n, k, err)  # noqa: E731
        return cls(
            _int(o["round"], "round", err), _int(o["term"], "term", err),
            _site(o["leader"], "leader", err), _site(o["sender"], "sender", err),
            sized("b", SHARE_SIZE), sized("c", SHARE_SIZE), sized("pair", KEY_SIZE),
        )  # fmt: skip
