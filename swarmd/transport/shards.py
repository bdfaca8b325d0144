"""Wire messages of a sharded round, carried as the body of a `secagg` message of topic `shards`.

Every body is one msgpack map `{"v": 1, "kind": ..., fields}` with exactly the keys of its kind, in
order; `decode_shard_msg` checks every type, length and range before anything reads it. Six kinds,
three questions and their answers:

    leaves_ask  owner -> committer   round, term            "your update's leaf hashes, please"
    leaves      committer -> owner   round, hashes          the leaf hashes whose Merkle root it committed
    plan        leader -> committer  round, term, epoch, owners, include, merged
                                                            who owns each leaf; once decided, whose updates
                                                            are merged (include) and the merged leaves'
                                                            hashes (merged); answered by a status
    status      committer -> leader  round, term, epoch, held, failed, merged
                                                            senders whose leaves it holds for its leaves of
                                                            that plan, senders it refuses (a reason label
                                                            each), the hashes of the leaves it merged

and, after the round, for `swarm ledger audit`:

    update_ask  auditor -> committer  round                "the content hash of your committed update"
    update      committer -> auditor  round, hash          it (the auditor fetches it by that hash and
                                                            checks that its leaves' root is the commitment)

Leaf bytes never travel here: a leaf (or a merged leaf) is fetched by its content hash with the
ordinary model fetch, which verifies the hash while it receives. The layout, the Merkle root and the
assignment rules are `swarmd.merge.shards`'; the protocol is docs/protocol.md "Sharded rounds".
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any, ClassVar

import msgpack

from swarmd.errors import WireError
from swarmd.task import MAX_SHARD_LEAVES

SHARD_PROTOCOL = 1
MAX_LEAVES = MAX_SHARD_LEAVES  # leaves a plan may list (`[exchange] leaves` is at most this)
MAX_SITES = 128  # committers a round may have (the contract's bound)
HASH = 32
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")
_LABEL = re.compile(r"[a-z_]{1,32}")


class BadShardMessage(WireError):
    """A `shards` body that is not one of the kinds above, exactly."""


def _uint(x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, int) or not 0 <= x < 1 << 63:
        raise BadShardMessage(f"expected an unsigned integer, got {type(x).__name__}")
    return x


def _hash(x: object) -> bytes:
    if not isinstance(x, bytes) or len(x) != HASH:
        raise BadShardMessage("a hash must be 32 bytes")
    return x


def _hashes(x: object, most: int = MAX_LEAVES) -> tuple[bytes, ...]:
    if not isinstance(x, list) or not 0 < len(x) <= most:
        raise BadShardMessage(f"expected a list of 1..{most} hashes")
    if not all(isinstance(h, bytes) and len(h) == HASH for h in x):
        raise BadShardMessage("a hash must be 32 bytes")
    return tuple(x)


def _addresses(x: object, most: int) -> tuple[str, ...]:
    if not isinstance(x, list) or len(x) > most:
        raise BadShardMessage(f"expected a list of at most {most} addresses")
    if not all(isinstance(a, str) and _ADDRESS.fullmatch(a) for a in x):
        raise BadShardMessage("an address must be 0x and 40 hex digits")
    return tuple(x)


def _opt_addresses(x: object) -> tuple[str, ...] | None:
    return None if x is None else _addresses(x, MAX_SITES)


def _opt_hashes(x: object) -> tuple[bytes, ...] | None:
    return None if x is None else _hashes(x)


def _failed(x: object) -> dict[str, str]:
    if not isinstance(x, dict) or len(x) > MAX_SITES:
        raise BadShardMessage(f"expected a map of at most {MAX_SITES} refusals")
    for a, why in x.items():
        if not (
            isinstance(a, str) and _ADDRESS.fullmatch(a) and isinstance(why, str) and _LABEL.fullmatch(why)
        ):
            raise BadShardMessage("a refusal maps an address to a lowercase label")
    return dict(x)


def _merged(x: object) -> dict[int, bytes]:
    if not isinstance(x, dict) or len(x) > MAX_LEAVES:
        raise BadShardMessage(f"expected a map of at most {MAX_LEAVES} merged leaves")
    for i, h in x.items():
        if isinstance(i, bool) or not isinstance(i, int) or not 0 <= i < MAX_LEAVES:
            raise BadShardMessage("a merged leaf's index is out of range")
        if not isinstance(h, bytes) or len(h) != HASH:
            raise BadShardMessage("a hash must be 32 bytes")
    return dict(x)


@dataclass(frozen=True)
class ShardMessage:
    KIND: ClassVar[str]
    SCHEMA: ClassVar[dict[str, Any]]

    def encode(self) -> bytes:
        body: dict[str, Any] = {"v": SHARD_PROTOCOL, "kind": self.KIND}
        for f in fields(self):
            value = getattr(self, f.name)
            body[f.name] = list(value) if isinstance(value, tuple) else value
        return msgpack.packb(body, use_bin_type=True)


@dataclass(frozen=True)
class LeavesAsk(ShardMessage):
    KIND = "leaves_ask"
    SCHEMA = {"round": _uint, "term": _uint}
    round: int
    term: int


@dataclass(frozen=True)
class Leaves(ShardMessage):
    KIND = "leaves"
    SCHEMA = {"round": _uint, "hashes": _hashes}
    round: int
    hashes: tuple[bytes, ...]


@dataclass(frozen=True)
class Plan(ShardMessage):
    KIND = "plan"
    SCHEMA = {
        "round": _uint,
        "term": _uint,
        "epoch": _uint,
        "owners": lambda x: _addresses(x, MAX_LEAVES),
        "include": _opt_addresses,
        "merged": _opt_hashes,
    }
    round: int
    term: int
    epoch: int
    owners: tuple[str, ...]  # leaf i -> the committer that merges it
    include: tuple[str, ...] | None = None  # decided: the updates every owner merges
    merged: tuple[bytes, ...] | None = None  # every merged leaf's hash, once all are merged

    def __post_init__(self) -> None:
        if not self.owners or (self.merged is not None and len(self.merged) != len(self.owners)):
            raise BadShardMessage("a plan names an owner, and a merged hash, for every leaf")

    def leaves_of(self, site: str) -> list[int]:
        low = site.lower()
        return [i for i, a in enumerate(self.owners) if a.lower() == low]


@dataclass(frozen=True)
class Status(ShardMessage):
    KIND = "status"
    SCHEMA = {
        "round": _uint,
        "term": _uint,
        "epoch": _uint,
        "held": lambda x: _addresses(x, MAX_SITES),
        "failed": _failed,
        "merged": _merged,
    }
    round: int
    term: int
    epoch: int
    held: tuple[str, ...]  # senders whose leaves (this site's leaves under the plan) it holds, checked
    failed: dict[str, str]  # sender -> why its leaves are refused (an accounting label)
    merged: dict[int, bytes]  # leaf -> hash of the merged leaf (decided plans only)


@dataclass(frozen=True)
class UpdateAsk(ShardMessage):
    KIND = "update_ask"
    SCHEMA = {"round": _uint}
    round: int


@dataclass(frozen=True)
class UpdateHash(ShardMessage):
    KIND = "update"
    SCHEMA = {"round": _uint, "hash": _hash}
    round: int
    hash: bytes


KINDS: dict[str, type[ShardMessage]] = {
    k.KIND: k for k in (LeavesAsk, Leaves, Plan, Status, UpdateAsk, UpdateHash)
}


def decode_shard_msg(body: bytes) -> ShardMessage:
    """The message a `shards` body carries; BadShardMessage for anything else."""
    try:
        obj = msgpack.unpackb(body, raw=False, strict_map_key=False, max_bin_len=1 << 16, max_array_len=1024)
    except (ValueError, msgpack.ExtraData, msgpack.FormatError, msgpack.StackError) as exc:
        raise BadShardMessage(f"not msgpack: {exc}") from None
    if not isinstance(obj, dict) or list(obj)[:2] != ["v", "kind"]:
        raise BadShardMessage('a shards body is a map that starts with "v" and "kind"')
    if obj["v"] != SHARD_PROTOCOL:
        raise BadShardMessage(f"shards protocol {obj['v']!r}, this site speaks {SHARD_PROTOCOL}")
    cls = KINDS.get(obj["kind"]) if isinstance(obj["kind"], str) else None
    if cls is None:
        raise BadShardMessage(f"unknown shards kind {str(obj['kind'])[:32]!r}")
    if list(obj)[2:] != list(cls.SCHEMA):
        raise BadShardMessage(f"{cls.KIND} takes exactly the keys {', '.join(cls.SCHEMA)}")
    return cls(**{k: check(obj[k]) for k, check in cls.SCHEMA.items()})
