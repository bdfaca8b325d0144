"""Domain types of the ledger: member and round records as the contract holds them, deploy parameters,
and decoded events. Frozen dataclasses; `from_chain` builds them from the contract's view tuples.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import Any

import zmq.utils.z85 as z85


class MemberStatus(IntEnum):
    """ISwarmLedger.MemberStatus."""

    NONE = 0
    PENDING = 1
    ACTIVE = 2
    REMOVED = 3


class RoundStatus(IntEnum):
    """ISwarmLedger.RoundStatus, derived on chain from the round's stored blocks."""

    OPEN = 0
    ELECTED = 1
    FINALIZED = 2
    ABANDONED = 3


class Outcome(IntEnum):
    """What a round's finalize says about each committer (ISwarmLedger.Outcome, one byte per commit).

    The leader must account for every commit: a finalize whose outcome list is not exactly one code per
    commit reverts. NOT_REVEALED is the contract's own verdict (the committer's election secret was not
    revealed in time) and the leader may not use it for anyone else; the others are the leader's claim,
    which `swarm ledger audit` recomputes and `swarm ledger dispute` can contest (a signed receipt
    contradicts NOT_DELIVERED, HASH_MISMATCH and RECOVERED)."""

    INCLUDED = 0
    NOT_DELIVERED = 1  # no update arrived before the exchange deadline
    HASH_MISMATCH = 2  # what arrived does not hash to the commitment
    FAILED_VALIDATION = 3  # non-finite values, wrong structure, over the norm bound
    REJECTED_BY_RULE = 4  # a robust rule (median, trimmed mean, Krum...) left it out
    NOT_REVEALED = 5  # did not reveal its election secret: excluded by the contract
    RECOVERED = 6  # secure aggregation: its masked input did not arrive; its masks were recovered

    @property
    def delivery_claim(self) -> bool:
        """Outcomes that say the update never reached the leader intact: a receipt disproves them."""
        return self in (Outcome.NOT_DELIVERED, Outcome.HASH_MISMATCH, Outcome.RECOVERED)


def hex32(value: bytes | None) -> str | None:
    return None if value is None else "0x" + value.hex()


@dataclass(frozen=True)
class DeployParams:
    """What the consortium binds at deploy time (the constructor's arguments)."""

    task_hash: bytes
    initial_model_hash: bytes
    min_peers: int
    commit_window: int
    leader_timeout: int
    majority_admission: bool = False
    secure_aggregation: bool = False  # sites advertise keys and mask their updates (the task's [privacy])
    reveal_window: int = 10  # blocks after commits close in which committers reveal their election secrets


@dataclass(frozen=True)
class Binding:
    """DeployParams as read back from the chain, plus who administers it and since when."""

    params: DeployParams
    admin: str
    deploy_block: int


@dataclass(frozen=True)
class Member:
    account: str
    curve_key: bytes  # 32 raw bytes of the CURVE public key
    endpoint: str
    status: MemberStatus
    joined_block: int = 0
    status_block: int = 0
    admit_votes: int = 0
    remove_votes: int = 0

    @property
    def curve_key_z85(self) -> bytes:
        """The CURVE public key as ZeroMQ wants it (40 z85 characters)."""
        return z85.encode(self.curve_key)

    @classmethod
    def from_chain(cls, view: Any) -> Member:
        account, key, endpoint, status, joined, since, admit_votes, remove_votes = view
        return cls(
            account=str(account),
            curve_key=bytes(key),
            endpoint=str(endpoint),
            status=MemberStatus(status),
            joined_block=int(joined),
            status_block=int(since),
            admit_votes=int(admit_votes),
            remove_votes=int(remove_votes),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "account": self.account,
            "curve_key": self.curve_key_z85.decode("ascii"),
            "endpoint": self.endpoint,
            "status": self.status.name.lower(),
            "joined_block": self.joined_block,
            "status_block": self.status_block,
            "admit_votes": self.admit_votes,
            "remove_votes": self.remove_votes,
        }


@dataclass(frozen=True)
class VoteTally:
    """One majority-mode ballot as its VoteCast event told it: `votes` of `needed` after this one."""

    candidate: str
    voter: str
    admit: bool  # an admission ballot; False: a removal ballot
    votes: int
    needed: int

    @property
    def passed(self) -> bool:
        return self.votes >= self.needed


@dataclass(frozen=True)
class CommitInfo:
    site: str
    update_hash: bytes
    n_samples: int
    block: int
    milli_epsilon: int = 0  # the site's cumulative DP epsilon after the round, x1000; 0 = no DP account

    @property
    def epsilon(self) -> float | None:
        """The cumulative epsilon the commit records, or None when the site keeps no privacy account."""
        return self.milli_epsilon / 1000 if self.milli_epsilon else None

    def to_json(self) -> dict[str, Any]:
        return {
            "site": self.site,
            "update_hash": hex32(self.update_hash),
            "n_samples": self.n_samples,
            "block": self.block,
            "milli_epsilon": self.milli_epsilon,
            "epsilon": self.epsilon,
        }


@dataclass(frozen=True)
class AdvertisedKeys:
    """One site's per-round secure-aggregation public keys (X25519, 32 raw bytes each), from KeysAdvertised.
    The transaction's sender is `site`, so the keys are bound to its on-chain identity."""

    site: str
    mask_pk: bytes
    enc_pk: bytes


@dataclass(frozen=True)
class RoundInfo:
    round: int
    status: RoundStatus
    term: int
    leader: str | None
    commits: tuple[CommitInfo, ...]
    failed_leaders: tuple[str, ...]
    base_hash: bytes
    merged_hash: bytes | None
    included: tuple[str, ...]
    opened_block: int
    first_commit_block: int | None
    elected_block: int | None
    finalized_block: int | None  # block the round closed as FINALIZED
    abandoned_block: int | None = None  # block the round closed as ABANDONED
    key_count: int = 0  # sites that advertised secure-aggregation keys; 0 = a plain round
    recovered: tuple[str, ...] = ()  # committers whose masks were recovered from shares (dropouts)
    revealed: tuple[str, ...] = ()  # committers that revealed their election secret, in commit order
    outcomes: tuple[Outcome, ...] = ()  # one per commit, in commit order; () until finalized

    @property
    def secure_aggregation(self) -> bool:
        return self.key_count > 0

    @property
    def mode(self) -> str:
        return "secure aggregation" if self.secure_aggregation else "plain"

    @property
    def committers(self) -> tuple[str, ...]:
        return tuple(c.site for c in self.commits)

    def outcome_of(self, site: str) -> Outcome | None:
        """The finalize outcome of `site`'s commit; None before finalize or for a non-committer."""
        low = site.lower()
        by_site = {c.site.lower(): o for c, o in zip(self.commits, self.outcomes, strict=False)}
        return by_site.get(low)

    def has_revealed(self, site: str) -> bool:
        low = site.lower()
        return any(a.lower() == low for a in self.revealed)

    def commit_of(self, site: str) -> CommitInfo | None:
        """This round's commit by `site` (addresses compare case-insensitively), or None."""
        low = site.lower()
        return next((c for c in self.commits if c.site.lower() == low), None)

    @classmethod
    def from_chain(cls, view: Any) -> RoundInfo:
        (
            rnd,
            status,
            term,
            leader,
            base,
            merged,
            opened,
            elected,
            closed,
            keys,
            commits,
            failed,
            included,
            recovered,
            revealed,
            outcomes,
        ) = view
        status = RoundStatus(status)
        infos = tuple(CommitInfo(str(s), bytes(h), int(n), int(b), int(e)) for s, h, n, b, e in commits)
        zero = b"\x00" * 32
        return cls(
            round=int(rnd),
            status=status,
            term=int(term),
            leader=None if int(leader, 16) == 0 else str(leader),
            commits=infos,
            failed_leaders=tuple(str(a) for a in failed),
            base_hash=bytes(base),
            merged_hash=None if bytes(merged) == zero else bytes(merged),
            included=tuple(str(a) for a in included),
            opened_block=int(opened),
            first_commit_block=infos[0].block if infos else None,
            elected_block=int(elected) or None,
            finalized_block=int(closed) if status is RoundStatus.FINALIZED else None,
            abandoned_block=int(closed) if status is RoundStatus.ABANDONED else None,
            key_count=int(keys),
            recovered=tuple(str(a) for a in recovered),
            revealed=tuple(str(a) for a in revealed),
            outcomes=tuple(Outcome(b) for b in bytes(outcomes)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "status": self.status.name.lower(),
            "term": self.term,
            "leader": self.leader,
            "commits": [c.to_json() for c in self.commits],
            "failed_leaders": list(self.failed_leaders),
            "base_hash": hex32(self.base_hash),
            "merged_hash": hex32(self.merged_hash),
            "included": list(self.included),
            "mode": self.mode,
            "key_count": self.key_count,
            "recovered": list(self.recovered),
            "revealed": list(self.revealed),
            "outcomes": [o.name.lower() for o in self.outcomes],
            "total_samples": sum(c.n_samples for c in self.commits),
            "opened_block": self.opened_block,
            "first_commit_block": self.first_commit_block,
            "elected_block": self.elected_block,
            "finalized_block": self.finalized_block,
            "abandoned_block": self.abandoned_block,
        }


@dataclass(frozen=True)
class ElectionView:
    """Round `info` and what the next block allows (`canReveal`, `canElect`), read at one instant: the
    election loop's one read per new block."""

    info: RoundInfo
    can_reveal: bool
    can_elect: bool


@dataclass(frozen=True)
class RoundStart:
    """What a site reads before it plays a round, at one instant: the member list, the current round and
    the info of the round it asked for (None unless that is the current round)."""

    members: list[Member]
    current: int
    info: RoundInfo | None


@dataclass(frozen=True)
class Attestation:
    """One Attested event: `auditor` published whether its audit of `round` agreed (`ok`)."""

    round: int
    auditor: str
    ok: bool
    block: int

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "auditor": self.auditor, "ok": self.ok, "block": self.block}


@dataclass(frozen=True)
class Dispute:
    """One Disputed event: `site` showed a receipt from `leader` that contradicts its finalize outcome."""

    round: int
    site: str
    leader: str
    block: int

    def to_json(self) -> dict[str, Any]:
        return {"round": self.round, "site": self.site, "leader": self.leader, "block": self.block}


@dataclass(frozen=True)
class LedgerEvent:
    """One decoded contract event. `args` holds Python values (bytes for bytes32, str for addresses)."""

    name: str
    args: dict[str, Any]
    block: int
    tx_hash: str
    log_index: int

    def to_json(self) -> dict[str, Any]:
        args = {k: (hex32(v) if isinstance(v, bytes) else v) for k, v in self.args.items()}
        return {
            "name": self.name,
            "args": args,
            "block": self.block,
            "tx_hash": self.tx_hash,
            "log_index": self.log_index,
        }
