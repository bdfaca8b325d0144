"""The state dir: round journal plus content-addressed checkpoints.

Layout under `state_dir`:
    keys/                 identity (written by `swarm init`)
    checkpoints/<hash>.safetensors   models and updates, named by their codec content hash
    journal.json          what this site did in each round (trained, committed, sent, merged, evaluated)

The journal is small and rewritten atomically on each change, so a `kill -9` at any point leaves
either the previous or the next version. Together with the chain it is enough to resume a round.
A full disk leaves the previous version too: the change is kept in memory only once it is on disk.
A journal that cannot be read is moved aside (`Journal.recover`) and the site resyncs from the chain.

Writes that fail for lack of space are reported as a DISK_FULL problem and cleared by the next
write that succeeds, so `swarm status` shows the daemon waiting for space rather than a crash.
"""

from __future__ import annotations

import json
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from swarmd.checkpoint import CheckpointStore
from swarmd.checkpoint_reader import HeldState
from swarmd.codec import Digest
from swarmd.daemon.state import ProblemKind, Problems
from swarmd.errors import CodecError, JournalError
from swarmd.fsutil import DiskFullError, atomic_write_text, quarantine
from swarmd.scores import Score, Scores, parse_scores

log = logging.getLogger("swarmd.store")

JOURNAL_VERSION = 1
QUARANTINE = "quarantine"  # beside the journal: journals that could not be read
JOURNAL_PROBLEM = "journal"


class _DiskWatch:
    """Reports writes that fail for lack of space, and clears the report at the next good write."""

    def __init__(self, problems: Problems | None, what: str) -> None:
        self.problems = problems
        self.key = f"disk full: {what}"

    def failed(self, exc: DiskFullError) -> None:
        if self.problems is not None:
            self.problems.report(self.key, ProblemKind.DISK_FULL, str(exc), "nothing changed; retrying")

    def ok(self) -> None:
        if self.problems is not None:
            self.problems.clear(self.key)


@dataclass(frozen=True)
class RoundRecord:
    """This site's own facts about one round. Chain facts are not duplicated here.

    Hashes are Digests (None: not known yet); the journal file holds them as `0x` hex, "" for None."""

    round: int
    base_hash: Digest | None = None  # model the round started from
    update_hash: Digest | None = None  # our update's content hash (committed on chain)
    plain_hash: Digest | None = None  # our trained update before masking (== update_hash without secagg)
    key_count: int = 0  # secure aggregation: the size of the key set our masks were made under
    n_samples: int = 0
    loss: float | None = None
    train_seconds: float | None = None
    committed: bool = False
    delivered_term: int = -1  # last term whose leader accepted our update
    led: bool = False
    merged_hash: Digest | None = None  # the round's finalized model, once we hold it
    metrics: Scores = field(default_factory=dict)  # evaluation of merged_hash on our held-out data
    phases: dict[str, float] = field(default_factory=dict)  # seconds spent in each phase of this round
    # Unix time this site first entered each phase of this round: `swarm bench round` lines sites up
    # against each other with it to split a round along its critical path.
    entered: dict[str, float] = field(default_factory=dict)
    received: dict[str, Digest] = field(default_factory=dict)  # as leader: sender -> the accepted update
    leader_rss_growth: int = 0  # as leader: peak RSS during exchange+merge minus RSS before it, bytes
    model_bytes: int = 0  # size of one update, bytes
    # As leader: what the merge rule did to each update (address -> merge.RuleVerdict.to_json(): its
    # weight, whether it was rejected, the fraction trimmed, why): the round's published summary.
    rule_verdicts: dict[str, dict[str, Any]] = field(default_factory=dict)
    # Our election secret (0x hex), written before the commit that carries its seal so a restarted site can
    # still reveal it. Kept out of repr: it must never reach a log before it is revealed.
    election_secret: str = field(default="", repr=False)

    def to_json(self) -> dict[str, object]:
        doc = asdict(self)
        for key in _HASH_FIELDS:
            doc[key] = _hex(getattr(self, key))
        doc["received"] = {sender: _hex(h) for sender, h in self.received.items()}
        return doc

    @classmethod
    def from_json(cls, doc: dict[str, Any]) -> RoundRecord:
        """Raises TypeError or ValueError (CodecError) on a malformed record."""
        fields = dict(doc)
        for key in _HASH_FIELDS:
            fields[key] = _digest(fields.get(key, ""))
        fields["received"] = {str(s): _digest(h) for s, h in fields.get("received", {}).items()}
        fields["metrics"] = parse_scores(fields.get("metrics", {}))
        return cls(**fields)


_HASH_FIELDS = ("base_hash", "update_hash", "plain_hash", "merged_hash")


def _hex(h: Digest | None) -> str:
    return h.hex0x() if h is not None else ""


def _digest(s: object) -> Digest | None:
    if s == "":
        return None
    if not isinstance(s, str):
        raise TypeError(f"a hash in the journal must be a hex string, got {s!r}")
    return Digest.parse(s)


@dataclass
class Journal:
    """The journal file: the daemon opens it once and saves it after every change (but `note`d ones);
    operator tools (`swarm devnet run`, `swarm ledger plot`, the round bench) `read` it without ever
    writing it."""

    path: Path
    rounds: dict[int, RoundRecord] = field(default_factory=dict)
    baseline: Scores = field(default_factory=dict)  # metrics of the initial model
    # `swarm.personalise_steps`: the site's fine-tuned final model (personal.Personalised.to_json())
    personalised: dict[str, Any] = field(default_factory=dict)
    read_only: bool = field(default=False, repr=False)
    problems: Problems | None = field(default=None, repr=False, compare=False)

    @classmethod
    def open(cls, path: Path) -> Journal:
        if not path.exists():
            return cls(path)
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            if doc.get("v") != JOURNAL_VERSION:
                raise JournalError(f"{path}: journal version {doc.get('v')!r} is not supported")
            rounds = {int(k): RoundRecord.from_json(v) for k, v in doc.get("rounds", {}).items()}
            baseline = parse_scores(doc.get("baseline", {}))
            personalised = dict(doc.get("personalised", {}))
        except (OSError, ValueError, TypeError, AttributeError, CodecError) as exc:
            raise JournalError(
                f"{path}: journal is unreadable ({exc})", hint="move it aside to resync from the chain"
            ) from None
        return cls(path, rounds, baseline, personalised)

    @classmethod
    def recover(cls, path: Path, problems: Problems) -> Journal:
        """The daemon's journal: an unreadable one is moved into `quarantine/` beside it and an empty
        one started, reported as a CORRUPT_JOURNAL problem (the daemon resyncs from the chain)."""
        try:
            journal = cls.open(path)
        except JournalError as exc:
            moved = quarantine(path, path.parent / QUARANTINE)
            problems.report(
                JOURNAL_PROBLEM,
                ProblemKind.CORRUPT_JOURNAL,
                f"{exc.args[0]}; moved it aside to {moved}",
                "resyncing from the chain; rejoining at the current round",
            )
            journal = cls(path)
        journal.problems = problems
        return journal

    @classmethod
    def read(cls, path: Path) -> Journal:
        """Another process's journal, read-only: JournalError when it is missing or unreadable."""
        if not path.exists():
            raise JournalError(f"no journal at {path}", hint="has this site's daemon run yet?")
        journal = cls.open(path)
        journal.read_only = True
        return journal

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._unsaved = False  # `note`d changes not yet on disk

    def get(self, r: int) -> RoundRecord:
        return self.rounds.get(r, RoundRecord(round=r))

    def update(self, r: int, **changes: Any) -> RoundRecord:
        """Change round r's record; StoreError (DiskFullError) leaves file and memory as they were."""
        with self._lock:
            rec = replace(self.get(r), **changes)
            self._save({**self.rounds, r: rec}, self.baseline)
            self.rounds[r] = rec
            return rec

    def note(self, r: int, **changes: Any) -> RoundRecord:
        """Change round r's record in memory only, for bookkeeping that may wait (the phases' times): the
        next `update` or `flush` writes it. A crash loses it, which costs a round's timings, never its
        state, and saves a journal write (an fsync) at every phase change on the round's path."""
        with self._lock:
            rec = replace(self.get(r), **changes)
            self.rounds[r] = rec
            self._unsaved = True
            return rec

    def flush(self) -> None:
        """Write what was `note`d since the last save, if anything."""
        with self._lock:
            if self._unsaved:
                self._save(self.rounds, self.baseline)

    def set_baseline(self, metrics: Scores) -> None:
        with self._lock:
            self._save(self.rounds, dict(metrics))
            self.baseline = dict(metrics)

    def set_personalised(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self._save(self.rounds, self.baseline, dict(doc))
            self.personalised = dict(doc)

    def _save(
        self, rounds: Mapping[int, RoundRecord], baseline: Scores, personalised: dict[str, Any] | None = None
    ) -> None:
        if self.read_only:
            raise JournalError(f"{self.path}: this journal was opened read-only")
        doc: dict[str, Any] = {
            "v": JOURNAL_VERSION,
            "rounds": {str(r): rec.to_json() for r, rec in sorted(rounds.items())},
            "baseline": baseline,
        }
        extra = self.personalised if personalised is None else personalised
        if extra:  # left out until there is one, so older readers see the journal they knew
            doc["personalised"] = extra
        watch = _DiskWatch(self.problems, "journal")
        try:
            atomic_write_text(self.path, json.dumps(doc, indent=1, sort_keys=True))
        except DiskFullError as exc:
            watch.failed(exc)
            raise
        watch.ok()
        self._unsaved = False

    def latest_merged(self) -> RoundRecord | None:
        done = [rec for rec in self.rounds.values() if rec.merged_hash]
        return max(done, key=lambda rec: rec.round) if done else None

    def records(self) -> list[RoundRecord]:
        """Every round this site journaled, in round order."""
        return [self.rounds[r] for r in sorted(self.rounds)]

    def metric_series(self) -> dict[str, list[tuple[int, Score]]]:
        """metric name -> [(round, value)], with the initial model's score as round -1; an undefined
        value is its reason."""
        out: dict[str, list[tuple[int, Score]]] = {}
        for name, value in self.baseline.items():
            out.setdefault(name, []).append((-1, value))
        for rec in self.records():
            for name, value in rec.metrics.items():
                out.setdefault(name, []).append((rec.round, value))
        return out

    def final_metrics(self) -> Scores:
        """The scores of the last evaluated merged model ({} when none was evaluated)."""
        return next((dict(rec.metrics) for rec in reversed(self.records()) if rec.metrics), {})


class ModelStore(CheckpointStore):
    """The checkpoint store, plus the last few models a round touches, kept in memory.

    A round reads the same models again and again (its base, our update, the merged model it
    serves). Reading one back costs a disk read, a copy and a re-hash, about as long as moving it
    over loopback, so the round's critical path reads memory instead. Updates received as leader
    are written with `keep=False`: keeping them would hold N models, not one accumulator.
    """

    def __init__(self, root: Path, keep: int = 3, problems: Problems | None = None) -> None:
        super().__init__(root)
        self.keep = keep
        self._recent: OrderedDict[bytes, dict[str, torch.Tensor]] = OrderedDict()
        self._lock = threading.Lock()
        self._disk = _DiskWatch(problems, "checkpoints")

    def put(self, state: Mapping[str, torch.Tensor], h: bytes | None = None, *, keep: bool = True) -> Digest:
        try:
            digest = Digest(super().put(state, h))
        except DiskFullError as exc:
            self._disk.failed(exc)
            raise
        self._disk.ok()
        if keep:
            self._remember(digest, dict(state))
        return digest

    def get(self, h: bytes, *, keep: bool = True) -> dict[str, torch.Tensor]:
        with self._lock:
            if h in self._recent:
                self._recent.move_to_end(h)
                return self._recent[h]
        state = super().get(h)
        if keep:
            self._remember(h, state)
        return state

    def open_update(self, h: bytes) -> Mapping[str, torch.Tensor]:
        """A model held in memory (its hash was checked when it came in) as a `HeldState` over it, else the
        stored file, verified and read one tensor at a time (`open`): how the leader's merge reads the
        updates, its own from memory. Either reads on access: a merge rule may keep it until its merge."""
        with self._lock:
            if h in self._recent:
                return HeldState(self._recent[h])
        return super().open(h)

    def holds(self, h: bytes) -> bool:
        """In memory or on disk: a model we can serve (it may not be durable yet)."""
        with self._lock:
            if h in self._recent:
                return True
        return self.has(h)

    def remember(self, h: bytes, state: Mapping[str, torch.Tensor]) -> None:
        """Keep a model whose content hash the caller verified, before it is written."""
        self._remember(h, dict(state))

    def _remember(self, h: bytes, state: dict[str, torch.Tensor]) -> None:
        with self._lock:
            self._recent[h] = state
            self._recent.move_to_end(h)
            while len(self._recent) > self.keep:
                self._recent.popitem(last=False)
