"""One committer's part in a sharded round (round, term): its own update's leaves (served to the owners
that fetch them), the leaves it owns under the leader's current plan, the pieces of them it fetched
from the other committers (each checked against the sender's commitment), and the leaves it merged.

No sockets: `ShardSide` (shards.py) fetches and answers; this object says what is missing, checks what
arrives, and merges. Pieces are kept across plans, so a plan that only moves a dead owner's leaves
costs the new owner those leaves, nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch

from swarmd.codec import Digest, content_hash
from swarmd.daemon.accounting import HASH_MISMATCH
from swarmd.errors import InvalidUpdate
from swarmd.merge import MergeRule, validate
from swarmd.merge.base import address_order
from swarmd.merge.shards import ShardLayout, merge_leaf, merkle_root
from swarmd.transport.shards import Plan, Status

Leaf = dict[str, torch.Tensor]
Committed = dict[str, tuple[bytes, int]]  # committer -> (committed root, sample count)


@dataclass
class ShardWork:
    round: int
    term: int
    me: str
    leader: str
    base: Mapping[str, torch.Tensor]
    own: Mapping[str, torch.Tensor]  # this site's update
    committed: Committed  # the revealed committers (before the election: every committer)
    is_diff: bool
    leaves: int  # the task's `[exchange] leaves`
    layout: ShardLayout = field(init=False)
    own_hashes: list[Digest] = field(default_factory=list)  # our leaves' hashes, when the commit made them
    plan: Plan | None = None
    lists: dict[str, tuple[bytes, ...]] = field(default_factory=dict)  # sender -> its checked leaf hashes
    pieces: dict[int, dict[str, Leaf]] = field(default_factory=dict)  # leaf -> sender -> its piece
    failed: dict[str, str] = field(default_factory=dict)  # sender -> why its pieces are refused
    merged: dict[int, tuple[tuple[str, ...], Digest, Leaf]] = field(default_factory=dict)
    gathered: Digest | None = None  # the content hash of the model this site assembled
    gathered_include: tuple[str, ...] | None = None  # the updates merged into it
    gathered_owners: int = 0  # how many sites owned its leaves
    over: bool = False  # the term ended for this site: its owner loop stops

    def __post_init__(self) -> None:
        self.layout = ShardLayout(self.base, self.leaves)
        if len(self.own_hashes) != self.layout.count:
            self.own_hashes = self.layout.hashes(self.own)
        for i, piece in enumerate(self.layout.leaves(self.own)):
            self.pieces.setdefault(i, {})[self.me] = piece

    def inherit(self, earlier: ShardWork) -> None:
        """Keep what an earlier work of this round (a term before, or the start before the election) checked
        and fetched of the updates still committed here: an update's leaves do not change with the term.
        Its merges are kept too; each names the include it was merged over."""
        keep = self.committed.keys()
        self.lists.update({s: h for s, h in earlier.lists.items() if s in keep})
        self.failed.update({s: why for s, why in earlier.failed.items() if s in keep})
        for i, held in earlier.pieces.items():
            mine = self.pieces.setdefault(i, {})
            mine.update({s: piece for s, piece in held.items() if s in keep and s not in mine})
        self.merged.update(earlier.merged)

    def opened_early(self, r: int, committed: Committed) -> bool:
        """Round r's work opened before the election (term -1) on exactly these committers."""
        return (self.round, self.term) == (r, -1) and self.committed.keys() == committed.keys()

    def retarget(self, term: int, leader: str) -> None:
        """Go on as the work of the elected `term`: the work opened before the election (term -1, on the
        commits alone) keeps its pieces and merges, and takes the term's plans from here on."""
        self.term, self.leader, self.plan = term, leader, None

    def own_leaves(self) -> dict[bytes, Leaf]:
        """What this site serves to the owners: its update's leaves, by hash."""
        return {h: self.layout.leaf(self.own, i) for i, h in enumerate(self.own_hashes)}

    def adopt(self, plan: Plan) -> bool:
        """Take the leader's plan if it is newer than the one held; True when it changed."""
        if self.plan is not None and plan.epoch <= self.plan.epoch:
            return False
        self.plan = plan
        return True

    def mine(self) -> list[int]:
        return self.plan.leaves_of(self.me) if self.plan is not None else []

    def senders(self) -> list[str]:
        """Whose pieces this site still needs to hold: the decided include, else every committer that
        has not been refused."""
        if self.plan is not None and self.plan.include is not None:
            return list(self.plan.include)
        return [a for a in self.committed if a not in self.failed]

    def missing(self, sender: str) -> list[int]:
        return [i for i in self.mine() if sender not in self.pieces.get(i, {})]

    def check_list(self, sender: str, hashes: tuple[bytes, ...]) -> bool:
        """Keep a sender's leaf hashes if they hash to its commitment; refuse the sender otherwise."""
        if len(hashes) != self.layout.count or merkle_root(hashes) != self.committed[sender][0]:
            self.failed[sender] = HASH_MISMATCH
            return False
        self.lists[sender] = hashes
        return True

    def check_piece(self, sender: str, i: int, piece: Leaf) -> bool:
        """Keep leaf i of a sender (the transport checked its hash against the sender's list) if it has
        the leaf's structure and finite values; refuse the sender otherwise (the reason label)."""
        try:
            validate(piece, self.layout.leaf(self.base, i), sender=sender)
        except InvalidUpdate as exc:
            self.failed[sender] = exc.reason
            return False
        self.pieces.setdefault(i, {})[sender] = piece
        return True

    def include(self) -> tuple[str, ...]:
        """Whose updates a leaf is merged over: the plan's decided include, else (speculatively, so the
        merge is done by the time the leader decides) every committer not refused, as the leader
        orders them. A wrong guess costs one merge of the leaf; it is never reported."""
        plan = self.plan
        if plan is not None and plan.include is not None:
            return plan.include
        return tuple(sorted((a for a in self.committed if a not in self.failed), key=address_order))

    def to_merge(self) -> list[int]:
        """This site's leaves to merge now: every piece of the include is here and the leaf is not merged
        over that include yet."""
        include = self.include()
        done = {i for i, (inc, _, _) in self.merged.items() if inc == include}
        have = self.pieces
        return [
            i for i in self.mine() if i not in done and include and all(s in have.get(i, {}) for s in include)
        ]

    def merge(self, i: int, rule: Callable[[], MergeRule]) -> tuple[Digest, Leaf]:
        """Merge leaf i over `include()` (may run in a worker thread)."""
        include = self.include()
        pieces = {s: (self.pieces[i][s], self.committed[s][1]) for s in include}
        merged = merge_leaf(rule(), self.layout.leaf(self.base, i), pieces, is_diff=self.is_diff)
        digest = content_hash(merged)
        self.merged[i] = (include, digest, merged)
        return digest, merged

    def status(self) -> Status:
        plan = self.plan
        epoch = plan.epoch if plan is not None else 0
        held = sorted((s for s in self.committed if not self.missing(s)), key=address_order)
        merged: dict[int, bytes] = {}
        if plan is not None and plan.include is not None:
            merged = {
                i: h for i, (inc, h, _) in self.merged.items() if inc == plan.include and i in self.mine()
            }
        return Status(self.round, self.term, epoch, tuple(held), dict(self.failed), merged)
