"""The leader's plan of a sharded round: who owns which leaf, whose updates are merged, and when the
merged leaves are all known. No sockets, no chain: `Coordinator.observe` takes the committers'
statuses that came in since its last call (None for an answer it cannot use: alive, nothing more) and moves
the plan on; each site's latest status counts.

Every change makes a new plan with the next epoch, pushed to every live committer on the next cycle:

1. epoch 0 (`opening_plan`): `owners_of` the revealed committers; `include` undecided. Every committer
   can compute it, and acts on it before the leader's push arrives.
2. A site that has not answered for `DEAD_AFTER` seconds is dead: it is excluded (`not_delivered`, its own
   leaves of its update died with it) and its leaves go to the live owners (`reassign`). A sender an
   owner refuses (its leaf list does not hash to its commitment, a leaf does not hash to its list, a
   leaf fails validation) is excluded with the owner's label. Either undoes a decided `include` (every
   owner merged it in): the plan goes back to step 3.
3. Once every live owner reports holding every candidate's leaves (or at the deadline, with the
   candidates that every owner holds), `include` is decided.
4. Once the owner of every leaf reports its merged hash under that `include`, `merged` is set: the
   plan is final, and every site gathers the merged leaves from their owners.
"""

from __future__ import annotations

from swarmd.daemon.accounting import NOT_DELIVERED
from swarmd.merge.base import address_order
from swarmd.merge.shards import owners_of, reassign
from swarmd.transport.shards import Plan, Status

DEAD_AFTER = 8.0  # seconds without any answer before a committer counts as dead


def opening_plan(r: int, term: int, committers: list[str], leaves: int) -> Plan:
    """Epoch 0 of a term: it follows from the revealed committers alone, so every committer starts
    fetching the leaves it owns under it without waiting for the leader's first push."""
    return Plan(r, term, 0, owners_of(sorted(committers, key=address_order), leaves))


class Coordinator:
    """The plan of one (round, term), led by `leader` (never declared dead by itself)."""

    def __init__(
        self, r: int, term: int, committers: list[str], leaves: int, leader: str, now: float
    ) -> None:
        self.leader = leader
        self.candidates = sorted(committers, key=address_order)
        self.live = set(self.candidates)
        self.excluded: dict[str, str] = {}  # address -> accounting label
        self.plan = opening_plan(r, term, committers, leaves)
        self._seen = dict.fromkeys(self.candidates, now)
        self._latest: dict[str, Status] = {}

    @property
    def final(self) -> bool:
        return self.plan.merged is not None

    @property
    def include(self) -> list[str]:
        return list(self.plan.include or ())

    def describe(self) -> str:
        """One log line: the epoch, how many owners, what is decided."""
        p = self.plan
        include = "undecided" if p.include is None else f"{len(p.include)} included"
        merged = ", final" if p.merged is not None else ""
        owners = len(set(p.owners))
        return f"epoch {p.epoch}: {owners} owners, {include}{merged}, excluded {self.excluded or 'none'}"

    def observe(self, statuses: dict[str, Status | None], *, now: float, deadline: bool = False) -> None:
        """The answers that came in since the last call: site -> its status (for the plan it was sent,
        perhaps an older one), or None (alive, nothing usable). Each site's latest status counts."""
        self._seen.update(dict.fromkeys(statuses, now))
        self._latest.update({a: s for a, s in statuses.items() if s is not None})
        epoch = self.plan.epoch
        self._bury(now)
        for status in list(self._latest.values()):
            for sender, why in status.failed.items():
                self._exclude(sender, why)
        if self.plan.epoch != epoch:
            return  # the answers were to a plan that is gone: decide on the answers to the new one
        current = {a: s for a, s in self._latest.items() if s.epoch == epoch and a in self.live}
        if self.plan.include is None:
            self._decide(current, deadline)
        elif self.plan.merged is None:
            self._collect(current)

    def _bury(self, now: float) -> None:
        dead = {a for a in self.live if a != self.leader and now - self._seen[a] > DEAD_AFTER}
        if not dead:
            return
        self.live -= dead
        owners = reassign(self.plan.owners, dead)
        self._renew(owners=owners)
        for a in dead:
            self._exclude(a, NOT_DELIVERED)

    def _exclude(self, sender: str, why: str) -> None:
        if sender not in self.candidates:
            return
        self.candidates.remove(sender)
        self.excluded[sender] = why
        if self.plan.include is not None and sender in self.plan.include:
            self._renew(include=None)  # every owner merged it in: decide again without it

    def _decide(self, current: dict[str, Status], deadline: bool) -> None:
        owners = set(self.plan.owners)
        if not owners <= set(current) and not deadline:
            return
        held = set(self.candidates)
        for owner in owners:
            status = current.get(owner)
            held &= set(status.held) if status is not None else set()
        if held != set(self.candidates) and not deadline:
            return
        for sender in set(self.candidates) - held:
            self._exclude(sender, NOT_DELIVERED)
        self._renew(include=tuple(self.candidates))

    def _collect(self, current: dict[str, Status]) -> None:
        merged = []
        for i, owner in enumerate(self.plan.owners):
            status = current.get(owner)
            h = status.merged.get(i) if status is not None else None
            if h is None:
                return
            merged.append(h)
        self._renew(merged=tuple(merged))

    def _renew(self, **changes: object) -> None:
        p = self.plan
        values: dict[str, object] = {"owners": p.owners, "include": p.include, "merged": None}
        values.update(changes)
        if values["include"] is None:
            values["merged"] = None
        self.plan = Plan(p.round, p.term, p.epoch + 1, **values)  # type: ignore[arg-type]
