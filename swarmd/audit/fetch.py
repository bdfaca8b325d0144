"""Getting a round's inputs for an audit: the base model and the committed updates, each checked
against the hash the chain holds for it.

An auditor runs with a member site's config: its checkpoint store is read first (the site's own
update, and every update it received as a leader, are there), then the update's owner, then the
round's leader, over the site's own transport identity (only active members are let in, by the
peers' ZAP). The transport hashes the bytes as they arrive and refuses any that do not hash to the
requested value; the hash is checked once more here, so a model from the local store is held to
the same commitment.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import torch

from swarmd.checkpoint import CheckpointStore
from swarmd.codec import hash_against, hash_hex
from swarmd.errors import PeerRejected, StoreError, StreamFailed, TransportError, WireError
from swarmd.ledger import Member, MemberStatus
from swarmd.merge.shards import ShardLayout
from swarmd.privacy import BadTranscript, UnmaskTranscript
from swarmd.privacy.transcript import transcript_file
from swarmd.task import SHARD_LEAVES
from swarmd.transport import FetchOnly, Node, SecAggTopic
from swarmd.transport.context import BulkMode
from swarmd.transport.shards import UpdateAsk, UpdateHash, decode_shard_msg

log = logging.getLogger("swarmd.audit")

FETCH_TIMEOUT = 10.0  # seconds for a peer to answer a fetch (the stream itself has its stall timeout)
# A holder whose stream broke off was there: it is asked again, up to this many times in all, after a
# pause that grows by RETRY_PAUSE each time. A daemon's stall timeout follows its block time (2 s on a
# devnet), which a loaded auditor or holder can overrun once; an audit is not short of time.
FETCH_ATTEMPTS = 3
RETRY_PAUSE = 1.0


class UpdateUnavailable(TransportError):
    """No holder (this site's store, the owner, the leader) served a committed update or model."""


class TranscriptUnavailable(TransportError):
    """Neither a local state dir nor the round's leader gave the unmask transcript of a secure round."""


class UpdateSource:
    """Fetches models by hash for an audit. Use `async with UpdateSource(...) as source:`."""

    def __init__(
        self,
        *,
        store_dir: Path,
        me: str,
        curve_public: bytes,
        curve_secret: bytes,
        members: Iterable[Member],
        max_bytes: int,
        bulk: BulkMode = "aead",
        timeout: float = FETCH_TIMEOUT,
        more_stores: Sequence[Path] = (),
        own_updates: Mapping[int, bytes] | None = None,
        shard_leaves: int = SHARD_LEAVES,
    ) -> None:
        # `more_stores`: other stores on this disk (a devnet's other sites); held to the commitments alike.
        # `own_updates`: round -> the content hash of this site's committed update (its journal), which a
        # sharded round's commitment (a Merkle root) does not name; `shard_leaves`: the task's
        # `[exchange] leaves`, which that root is over.
        self.stores = [CheckpointStore(d) for d in (store_dir, *more_stores)]
        self.own_updates = dict(own_updates or {})
        self.shard_leaves = shard_leaves
        self.me = me.lower()
        self.max_bytes = max_bytes
        self.timeout = timeout
        self.unreachable: dict[str, str] = {}  # account -> what happened when it was asked
        active = [m for m in members if m.status is MemberStatus.ACTIVE]
        self.keys = {m.account.lower(): m.curve_key for m in active}
        self.endpoints = {m.curve_key: m.endpoint for m in active if m.account.lower() != self.me}
        self.node = Node(
            FetchOnly("an auditor takes no updates"),
            bind="tcp://127.0.0.1:*",
            public_key=curve_public,
            secret_key=curve_secret,
            max_bytes=max_bytes,
            bulk=bulk,
        )

    async def __aenter__(self) -> UpdateSource:
        await self.node.start()
        self.node.set_peers(self.endpoints)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.node.close()

    async def get(
        self, h: bytes, holders: Sequence[str | None], what: str
    ) -> tuple[dict[str, torch.Tensor], str]:
        """The model hashing to `h`, and where it came from ("local" or a holder's address).

        Tries this site's store, then each holder in turn (accounts; None and this site are skipped).
        Raises UpdateUnavailable, naming what each holder answered, when none served it."""
        tried: list[str] = []
        for store in self.stores:
            if not store.has(h):
                continue
            try:
                return self._checked(store.get(h), h, what), "local"
            except StoreError as exc:
                tried.append(f"local store {store.root}: {exc}")
        for holder in dict.fromkeys(a for a in holders if a):
            key = self.keys.get(holder.lower())
            if holder.lower() == self.me:
                continue
            if key is None:
                tried.append(f"{holder}: not an active member")
                continue
            if holder.lower() in self.unreachable:  # asked once already: do not wait on it again
                tried.append(f"{holder}: {self.unreachable[holder.lower()]}")
                continue
            try:
                state = await self._fetch(key, h, holder)
            except (PeerRejected, StreamFailed) as exc:  # up: not holding it, refusing us, or stalling
                tried.append(f"{holder}: {exc}")
                continue
            except (TransportError, WireError) as exc:
                self.unreachable[holder.lower()] = str(exc)
                tried.append(f"{holder}: {exc}")
                continue
            return self._checked(state, h, what), holder
        raise UpdateUnavailable(
            f"no holder served {what} {hash_hex(h)}: " + ("; ".join(tried) or "no holder to ask"),
            hint="the holders must be running and hold it; committed updates are kept as long as models",
        )

    async def _fetch(self, key: bytes, h: bytes, holder: str) -> dict[str, torch.Tensor]:
        """Model h from one holder; a stream that broke off is tried again (FETCH_ATTEMPTS in all)."""
        attempt = 1
        while True:
            try:
                return await self.node.fetch_model(key, h, max_bytes=self.max_bytes, timeout=self.timeout)
            except StreamFailed as exc:
                if attempt == FETCH_ATTEMPTS:
                    raise StreamFailed(f"{exc} ({attempt} tries)") from exc
                log.info("fetch of %s from %s broke off (%s); trying again", hash_hex(h), holder, exc)
                await asyncio.sleep(RETRY_PAUSE * attempt)
                attempt += 1

    async def sharded_update(self, r: int, site: str, root: bytes) -> tuple[dict[str, torch.Tensor], str]:
        """A sharded round's committed update and where it came from. The chain holds only the Merkle root
        of its leaves: the committer names the update's content hash (this site's journal, for its own),
        the update is fetched by it, and its leaves' root is held to the commitment."""
        what = f"the update of {site}"
        h = self.own_updates.get(r) if site.lower() == self.me else await self._update_hash(r, site)
        if h is None:
            raise UpdateUnavailable(f"this site's journal names no committed update of round {r}")
        state, where = await self.get(h, [site], what)
        layout = ShardLayout(state, self.shard_leaves)
        if layout.root(state) != root and layout.root(state, legacy=True) != root:  # v1: before protocol 4
            raise UpdateUnavailable(f"{what} in round {r}, as served, is not what its committed root names")
        return state, where

    async def _update_hash(self, r: int, site: str) -> bytes:
        key = self.keys.get(site.lower())
        if key is None or site.lower() in self.unreachable:
            why = self.unreachable.get(site.lower(), "not an active member")
            raise UpdateUnavailable(f"no one names the update {site} committed in round {r}: {site}: {why}")
        try:
            body = await self.node.secagg(
                key, round=r, topic=SecAggTopic.SHARDS, body=UpdateAsk(r).encode(), timeout=self.timeout
            )
            answer = decode_shard_msg(body)
        except PeerRejected as exc:
            raise UpdateUnavailable(f"{site} does not name its update of round {r}: {exc}") from None
        except (TransportError, WireError) as exc:
            self.unreachable[site.lower()] = str(exc)
            raise UpdateUnavailable(f"{site} does not name its update of round {r}: {exc}") from None
        if not isinstance(answer, UpdateHash) or answer.round != r:
            raise UpdateUnavailable(f"{site} answered the question for its update of round {r} with {answer}")
        return answer.hash

    async def transcript(self, r: int, tid: bytes, leader: str | None) -> tuple[bytes, str]:
        """The raw unmask transcript of round r with id `tid` and where it came from: a state dir on this
        disk (the stores' parents) that holds the one with that id, else the leader (an active member
        asks over the `secagg` message). Raises TranscriptUnavailable naming what each answered."""
        tried: list[str] = []
        for store in self.stores:
            path = transcript_file(store.root.parent, r)
            try:
                raw = path.read_bytes()
            except OSError:
                continue
            try:
                held = UnmaskTranscript.from_bytes(raw)
            except BadTranscript as exc:
                tried.append(f"{path}: {type(exc).__name__}: {exc}")
                continue
            if held.id == tid:
                return raw, "local"
            tried.append(f"{path}: holds another term's or model's (term {held.term})")
        key = self.keys.get((leader or "").lower())
        if leader is None or key is None or leader.lower() == self.me:
            tried.append(f"leader {leader}: not an active member, or this site")
        elif leader.lower() in self.unreachable:
            tried.append(f"leader {leader}: {self.unreachable[leader.lower()]}")
        else:
            try:
                raw = await self.node.secagg(
                    key, round=r, topic=SecAggTopic.TRANSCRIPT, body=tid, timeout=self.timeout
                )
                return raw, leader
            except PeerRejected as exc:
                tried.append(f"leader {leader}: {exc}")
            except (TransportError, WireError) as exc:
                self.unreachable[leader.lower()] = str(exc)
                tried.append(f"leader {leader}: {exc}")
        raise TranscriptUnavailable(
            f"no unmask transcript of round {r}: " + "; ".join(tried),
            hint="the round's leader keeps it in its state dir; it must be running (or its disk at hand)",
        )

    @staticmethod
    def _checked(state: dict[str, torch.Tensor], h: bytes, what: str) -> dict[str, torch.Tensor]:
        got = hash_against(state, h)
        if got != h:  # the transport and the store check this too; an audit states it once more
            raise UpdateUnavailable(f"{what} hashes to {hash_hex(got)}, not its commitment {hash_hex(h)}")
        return state
