"""What the daemon is doing right now: the phase vocabulary and the status snapshot `swarm status` shows."""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field
from enum import Enum
from typing import Any

from swarmd.codec import Digest


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
    DONE = "done"  # all task rounds finished; still serving the final model
    STOPPING = "stopping"


@dataclass
class DaemonState:
    site: str
    address: str
    round: int = -1
    phase: Phase = Phase.STARTING
    leader: str | None = None
    term: int = 0
    peers_seen: dict[str, float] = field(default_factory=dict)  # address -> unix time last heard
    last_merged_round: int = -1
    last_merged_hash: Digest | None = None
    n_samples: int = 0
    last_loss: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)
    baseline: dict[str, float] = field(default_factory=dict)
    epsilon: float | None = None  # differential privacy spent; None until privacy lands
    rounds_total: int = 0
    phase_since: float = field(default_factory=time.time)
    chain_ok: bool = True

    def enter(self, phase: Phase, round_: int | None = None) -> None:
        if round_ is not None:
            self.round = round_
        if phase != self.phase:
            self.phase = phase
            self.phase_since = time.time()

    def snapshot(self) -> dict[str, Any]:
        doc = asdict(self)
        doc["phase"] = self.phase.value
        doc["last_merged_hash"] = self.last_merged_hash.hex0x() if self.last_merged_hash else ""
        return doc
