"""What the daemon is doing right now: the phase vocabulary, the status snapshot `swarm status`
shows, and the problems with local state the daemon is repairing (`Problems`)."""

from __future__ import annotations

import copy
import logging
import threading
import time
from collections import deque
from dataclasses import asdict, dataclass, field, fields
from enum import Enum
from typing import Any

from swarmd.codec import Digest
from swarmd.scores import Scores

log = logging.getLogger("swarmd.state")
REPAIRED_KEPT = 16  # repaired problems `swarm status` still lists, newest last


class Phase(str, Enum):
    STARTING = "starting"
    SYNC = "sync"  # fetching the model this round starts from
    TRAIN = "train"
    COMMIT = "commit"
    ELECT = "elect"
    EXCHANGE = "exchange"  # sending our update to the leader, or (as leader) collecting
    MERGE = "merge"
    FINALIZE = "finalize"
    DISSEMINATE = "disseminate"
    SKIPPED = "skipped"  # missed this round's commit window; waiting for its model
    WAITING = "waiting"  # not an active member (pending admission, never joined, removed): not training
    DONE = "done"  # all task rounds finished; still serving the final model
    STOPPING = "stopping"


class ProblemKind(str, Enum):
    """Bad local state the daemon works around instead of exiting (a crash loop under systemd)."""

    DISK_FULL = "disk_full"  # a write failed for lack of space; retried as the round loop goes on
    CORRUPT_CHECKPOINT = "corrupt_checkpoint"  # quarantined; fetched again from a peer
    INITIAL_MODEL = "initial_model"  # neither on disk, nor rebuilt to the chain's hash, nor fetched yet
    CORRUPT_JOURNAL = "corrupt_journal"  # quarantined; the round state is resynced from the chain


@dataclass(frozen=True)
class Problem:
    kind: ProblemKind
    detail: str  # what went wrong
    action: str  # what the daemon is doing about it
    since: float  # unix time first reported
    repaired: float | None = None  # unix time it was repaired

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "kind": self.kind.value}


class Problems:
    """The current problems, keyed by what they concern (a file, a model); safe across threads.

    Each problem is logged once, when first reported, and once more when repaired."""

    def __init__(self) -> None:
        self._current: dict[str, Problem] = {}
        self._repaired: deque[Problem] = deque(maxlen=REPAIRED_KEPT)
        self._lock = threading.Lock()

    def report(self, key: str, kind: ProblemKind, detail: str, action: str) -> bool:
        """Record or update the problem `key`; True when it is new."""
        with self._lock:
            old = self._current.get(key)
            since = old.since if old is not None else time.time()
            self._current[key] = Problem(kind, detail, action, since)
        if old is None:
            log.error("problem (%s): %s; %s", kind.value, detail, action)
        return old is None

    def clear(self, key: str) -> None:
        """The problem `key` is repaired (nothing happens when there was none)."""
        with self._lock:
            old = self._current.pop(key, None)
            if old is not None:
                self._repaired.append(Problem(old.kind, old.detail, old.action, old.since, time.time()))
        if old is not None:
            log.info("repaired (%s): %s", old.kind.value, key)

    def __contains__(self, key: object) -> bool:
        return key in self._current

    def current(self) -> list[Problem]:
        with self._lock:
            return list(self._current.values())

    def repaired(self) -> list[Problem]:
        with self._lock:
            return list(self._repaired)


@dataclass
class DaemonState:
    site: str
    address: str
    round: int = -1
    phase: Phase = Phase.STARTING
    leader: str | None = None
    term: int = 0
    peers_seen: dict[str, float] = field(default_factory=dict)  # address -> unix time last heard
    peer_names: dict[str, str] = field(default_factory=dict)  # address -> site name (from the chain)
    # site name -> {"path": zmq|direct|relayed, "bytes_out"/"bytes_in": {path: n}} (the libp2p path only)
    peer_paths: dict[str, dict[str, Any]] = field(default_factory=dict)
    membership: str = "unknown"  # this site's standing: membership.Standing's value
    last_merged_round: int = -1
    last_merged_hash: Digest | None = None
    n_samples: int = 0
    last_loss: float | None = None
    metrics: Scores = field(default_factory=dict)  # an undefined metric holds its reason ("one class")
    baseline: Scores = field(default_factory=dict)
    personalised_hash: str = ""  # `swarm.personalise_steps`: the site's fine-tuned final model (0x hex)
    personalised_metrics: Scores = field(default_factory=dict)  # its scores on the eval list
    epsilon: float | None = None  # differential privacy spent; None when the task has no DP
    budget_spent: bool = False  # one more round would pass the task's epsilon budget: no more commits
    rounds_total: int = 0
    phase_since: float = field(default_factory=time.time)
    chain_ok: bool = True
    chain_heads: str = "off"  # `chain.ws_url`: "pushed" while the node pushes new heads, "lost" while not
    problems: Problems = field(default_factory=Problems)

    def enter(self, phase: Phase, round_: int | None = None) -> None:
        if round_ is not None:
            self.round = round_
        if phase != self.phase:
            self.phase = phase
            self.phase_since = time.time()

    def snapshot(self) -> dict[str, Any]:
        doc = {f.name: copy.deepcopy(getattr(self, f.name)) for f in fields(self) if f.name != "problems"}
        doc["phase"] = self.phase.value
        doc["last_merged_hash"] = self.last_merged_hash.hex0x() if self.last_merged_hash else ""
        doc["problems"] = [p.to_json() for p in self.problems.current()]
        doc["repaired"] = [p.to_json() for p in self.problems.repaired()]
        return doc
