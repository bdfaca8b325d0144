"""The sharded topology's arithmetic: how a model is cut into leaves, their Merkle root, who owns which.

A model's *flat parameter vector* is the concatenation of its tensors' elements in the codec's
manifest order (tensor names sorted, each tensor row-major). `ShardLayout` cuts it into `K =
min(leaves, elements)` contiguous *leaves* of (almost) equal element count: leaf i covers elements
[i * T // K, (i + 1) * T // K). A leaf travels as a small state dict: for every tensor it overlaps, the
tensor's name -> a 1-D slice of its elements (a view, no copy). The leaves of one model depend only on
its structure (names, shapes, dtypes), so every site cuts an update, the base model and the merged
model the same way. The leaf count is the task's `[exchange] leaves` (SHARD_LEAVES when unset).

A sharded commitment is `merkle_root(leaf_hashes(update))`, each leaf hash the codec's `content_hash`
of the leaf's state dict (RFC 6962's domain separation: 0x00 before a leaf, 0x01 before a node; an
odd node is promoted). `owners_of` gives each committer of a round a contiguous block of leaves, by
address; `reassign` hands a dead owner's leaves to the live ones. The coordinate-wise rules (fedavg,
median, trimmed mean, SCAFFOLD's fedavg) merge a leaf exactly as they merge the same coordinates of
the whole model (`merge_leaf`), so the assembled merged model has the leader topology's bits.
"""

from __future__ import annotations

import bisect
import hashlib
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import torch

from swarmd.codec import ContentHasher, Digest, content_hash, manifest_of, tensor_bytes
from swarmd.errors import MergeError
from swarmd.merge.base import MergeRule, Update, address_order
from swarmd.merge.diff import apply_diff
from swarmd.task import SHARD_LEAVES

MERKLE_LEAF = b"\x00"
MERKLE_NODE = b"\x01"
ROOT_DOMAIN = b"swarmd-shards-v1"


@dataclass(frozen=True)
class _Span:
    name: str
    start: int  # the tensor's first element in the flat vector
    numel: int
    shape: tuple[int, ...]


class ShardLayout:
    """The leaves of one model structure (see the module docstring)."""

    def __init__(self, template: Mapping[str, torch.Tensor], leaves: int = SHARD_LEAVES) -> None:
        spans, start = [], 0
        for name in sorted(template):
            t = template[name]
            spans.append(_Span(name, start, t.numel(), tuple(t.shape)))
            start += t.numel()
        if start == 0:
            raise MergeError("a model without elements cannot be sharded")
        self.spans: tuple[_Span, ...] = tuple(spans)
        self._starts = [s.start for s in spans]  # for a leaf's first span, by bisection
        self.total = start
        self.count = min(leaves, start)
        self.bounds = tuple(i * start // self.count for i in range(self.count + 1))

    def leaf(self, state: Mapping[str, torch.Tensor], i: int) -> dict[str, torch.Tensor]:
        """Leaf i of `state` (a model of this layout's structure): views of its tensors' elements."""
        lo, hi = self.bounds[i], self.bounds[i + 1]
        out: dict[str, torch.Tensor] = {}
        # Only the spans a leaf overlaps: a model has hundreds of tensors (DenseNet121 727), a leaf a few.
        for s in self.spans[bisect.bisect_right(self._starts, lo) - 1 :]:
            if s.start >= hi:
                break
            a, b = max(lo, s.start), min(hi, s.start + s.numel)
            if a < b:
                out[s.name] = state[s.name].reshape(-1)[a - s.start : b - s.start]
        return out

    def leaves(self, state: Mapping[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        return [self.leaf(state, i) for i in range(self.count)]

    def hashes(self, state: Mapping[str, torch.Tensor], *, legacy: bool = False) -> list[Digest]:
        """The content hash (`legacy`: the v1 hash) of every leaf of `state`, in leaf order."""
        return [content_hash(leaf, legacy=legacy) for leaf in self.leaves(state)]

    def root(self, state: Mapping[str, torch.Tensor], *, legacy: bool = False) -> Digest:
        """What a site commits to in a sharded round: the Merkle root of its update's leaf hashes
        (`legacy`: of their v1 hashes, as committed before protocol 4)."""
        return merkle_root(self.hashes(state, legacy=legacy))


class Assembly:
    """A model filled in leaf by leaf, in any order, and content-hashed as it fills: the leaves are
    contiguous runs of the manifest's bytes, so every leaf up to the first one missing can be hashed at
    once, and when the last leaf lands only those after the first gap remain. The same hash as
    `content_hash` of the whole model, without a model-sized copy and a whole-model hash at the end of a
    gather, where the leader waits for them to finalize."""

    def __init__(self, layout: ShardLayout, template: Mapping[str, torch.Tensor]) -> None:
        self.model = {s.name: torch.empty(s.shape, dtype=template[s.name].dtype) for s in layout.spans}
        self._views = layout.leaves(self.model)
        self._hasher = ContentHasher(manifest_of(self.model))
        self._placed = [False] * layout.count
        self._hashed = 0  # leaves [0, _hashed) are in the hash
        self._lock = threading.Lock()  # puts may come from several worker threads

    def put(self, i: int, leaf: Mapping[str, torch.Tensor]) -> None:
        """Leaf i's values (a checked leaf: its hash is the plan's); MergeError when it does not fit."""
        view = self._views[i]
        if set(leaf) != set(view) or any(
            leaf[k].numel() != v.numel() or leaf[k].dtype != v.dtype for k, v in view.items()
        ):
            raise MergeError(f"leaf {i} does not fit this model's layout")
        for name, piece in leaf.items():
            view[name].copy_(piece.reshape(-1))
        with self._lock:
            self._placed[i] = True
            while self._hashed < len(self._placed) and self._placed[self._hashed]:
                for piece in self._views[self._hashed].values():  # in span order: the manifest's
                    self._hasher.update(tensor_bytes(piece))
                self._hashed += 1

    def put_all(self, leaves: Sequence[tuple[int, Mapping[str, torch.Tensor]]]) -> None:
        for i, leaf in leaves:
            self.put(i, leaf)

    def digest(self) -> Digest:
        """The model's content hash, once every leaf is in."""
        with self._lock:
            if self._hashed != len(self._placed):
                raise MergeError(f"{self._placed.count(False)} leaves of the model are missing")
            return self._hasher.digest()


def merkle_root(hashes: Sequence[bytes]) -> Digest:
    """The Merkle root over leaf hashes (RFC 6962 node hashing), bound to the leaf count."""
    if not hashes:
        raise MergeError("a Merkle root needs at least one leaf")
    level = [hashlib.sha256(MERKLE_LEAF + h).digest() for h in hashes]
    while len(level) > 1:
        pairs = zip(level[0::2], level[1::2], strict=False)  # the odd last node has no pair
        paired = [hashlib.sha256(MERKLE_NODE + a + b).digest() for a, b in pairs]
        level = paired + level[len(paired) * 2 :]  # an odd last node goes up as it is
    return Digest(hashlib.sha256(ROOT_DOMAIN + len(hashes).to_bytes(4, "big") + level[0]).digest())


def owners_of(committers: Iterable[str], count: int) -> tuple[str, ...]:
    """Leaf i -> its owner: the committers sorted by address, each a contiguous block of leaves
    (block j: leaves [j * count // n, (j + 1) * count // n)). More committers than leaves: the
    last ones own none."""
    order = sorted(set(committers), key=address_order)
    if not order:
        raise MergeError("a sharded round needs at least one committer")
    n = len(order)
    return tuple(order[min(n - 1, (i * n) // count)] for i in range(count))


def reassign(owners: Sequence[str], dead: Iterable[str]) -> tuple[str, ...]:
    """The owners with every leaf of a dead owner handed, in turn, to the live owners (by address)."""
    gone = {a.lower() for a in dead}
    live = sorted({a for a in owners if a.lower() not in gone}, key=address_order)
    if not live:
        raise MergeError("every owner of the round is gone")
    out, k = [], 0
    for owner in owners:
        if owner.lower() in gone:
            owner, k = live[k % len(live)], k + 1
        out.append(owner)
    return tuple(out)


def merge_leaf(
    rule: MergeRule,
    base_leaf: Mapping[str, torch.Tensor],
    pieces: Mapping[str, tuple[Mapping[str, torch.Tensor], int]],
    *,
    is_diff: bool,
) -> dict[str, torch.Tensor]:
    """One leaf of the merged model: `pieces` (sender -> (its leaf, its sample count)) folded into
    `rule` in address order, as the leader folds whole updates; a merged diff is applied to the base."""
    rule.begin(base_leaf)
    for sender in sorted(pieces, key=address_order):
        leaf, n = pieces[sender]
        rule.add(Update(sender=sender, state=leaf, n_samples=n))
    merged = rule.result()
    return apply_diff(base_leaf, merged) if is_diff else merged
