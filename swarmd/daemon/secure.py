"""The daemon's side of secure aggregation: when to advertise keys, send shares, mask, and unmask.

`swarmd.privacy` holds the cryptography and knows no sockets and no chain; this module feeds it the
chain's facts (the advertised keys, the commits, the previous model's hash) and carries its opaque
bytes over the transport's `secagg` messages. The protocol is written down in docs/protocol.md.

Per-round secrets live in `<state>/secagg/`, so a restarted site can still answer for the shares it
holds; the vault there also remembers what it revealed, so no leader, in any term, gets both of one
peer's secrets from this site.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from swarmd.daemon.transcripts import TranscriptSide
from swarmd.errors import LedgerError, PeerRejected, TransportError
from swarmd.ledger import RoundInfo, RoundStatus
from swarmd.ledger import errors as reverts
from swarmd.merge import Update, with_unmasked
from swarmd.privacy import (
    Advertised,
    RoundSecrets,
    SecAggError,
    SecAggParams,
    ShareVault,
    Unmasker,
    graph_seed,
    make_shares,
    mask_update,
    neighbourhood,
)
from swarmd.task import WeightKind
from swarmd.transport import PeerId, Refusal, SecAggHeader, SecAggTopic, Verdict

log = logging.getLogger("swarmd.secagg")

SECAGG_TIMEOUT = 5.0  # seconds for one share delivery or unmask answer
KEEP_ROUNDS = 4  # rounds of secrets and shares kept on disk (a leader of an older round is gone)


def is_float(t: torch.Tensor) -> bool:
    return t.dtype.is_floating_point


@dataclass(frozen=True)
class RoundKeys:
    """The chain's view of a round's keys, and the graph every site derives from it."""

    advertised: list[Advertised]
    graph: dict[str, list[str]]


class NoSecrets(SecAggError):
    """A secure-aggregation message for a round this site made no keys for."""


class MaskedSum:
    """The leader's merge under secure aggregation: a streaming mod-2^32 sum, unmasked once the
    survivors answered. Quacks like `merge.MergeRule` for the exchange (begin, add, result)."""

    def __init__(self, unmasker: Unmasker, base: Mapping[str, torch.Tensor], *, is_diff: bool) -> None:
        self.unmasker = unmasker
        self.base = base
        self.is_diff = is_diff
        self.mean: dict[str, torch.Tensor] | None = None

    def begin(self, template: Mapping[str, torch.Tensor]) -> None:
        self.base = template

    def add(self, update: Update) -> None:
        self.unmasker.add(update.sender, {k: v.numpy().view(np.uint32) for k, v in update.state.items()})

    def result(self) -> dict[str, torch.Tensor]:
        if self.mean is None:
            raise SecAggError("not_unmasked", "the masked sum was not unmasked")
        return with_unmasked(self.base, self.mean, is_diff=self.is_diff)


def same_site(a: str, b: str) -> bool:
    return a.lower() == b.lower()


class SecureSide(TranscriptSide):
    """Secure aggregation steps for the round driver; inert until `setup_secure` and unless the task
    turns it on."""

    secure: bool = False
    vault: ShareVault | None = None

    def setup_secure(self, state_dir: Path) -> None:
        p = self.task.privacy
        self.secure = p.secure_aggregation
        self.state_dir = state_dir
        self.secagg_dir = state_dir / "secagg"
        self.params = SecAggParams.from_settings(p)
        self.vault = ShareVault(self.secagg_dir / "vault") if self.secure else None
        self._keys: dict[int, RoundKeys] = {}
        self._secrets: dict[int, RoundSecrets] = {}
        self._committed: dict[int, set[str]] = {}
        self._sharing: dict[int, asyncio.Future[RoundKeys]] = {}

    # --- a committer's side ----------------------------------------------------------------------
    def secrets(self, r: int, *, create: bool = False) -> RoundSecrets:
        """This site's secrets for round r: from disk if it made them before a restart. Only the
        committer's own path creates them; a peer's message for a round we hold none of is refused."""
        s = self._secrets.get(r)
        if s is not None:
            return s
        path = self.secagg_dir / f"round-{r}.secrets"
        if path.exists():
            s = RoundSecrets.load(path, r, self.me)
        elif create:
            s = RoundSecrets.new(r, self.me)
            s.save(path)
        else:
            raise NoSecrets("no_secrets", f"this site holds no secure-aggregation keys for round {r}")
        self._secrets = {k: v for k, v in self._secrets.items() if k > r - KEEP_ROUNDS}
        self._secrets[r] = s
        return s

    async def advertise(self, r: int) -> bool:
        """Put this round's public keys on chain (before training). False: the keys closed, sit out."""
        keys = await self.chain(self.ledger.advertised_keys, r)
        if any(a.site == self.me for a in keys):
            return True
        mask_pk, enc_pk = self.secrets(r, create=True).public
        try:
            await self.transact(self.ledger.advertise_keys, r, mask_pk, enc_pk)
        except reverts.KeysClosed:
            log.warning("round %d: keys closed (a site already committed) before ours landed; sitting out", r)
            return False
        return True

    async def await_keys(self, r: int) -> None:
        """Before masking, give every active member the chance to advertise: our commit closes the keys.

        Waits until all have, or `commit_window` blocks after the round opened or this site came to it,
        whichever is later (a member that is down costs each round that long; a round that opened before
        this daemon was up, as round 0 at a swarm's start, still gives the others a window), or that many
        blocks' worth of seconds (blocks may not come)."""
        info = await self.chain(self.ledger.round, r)
        window = self.task.swarm.commit_window
        deadline = max(info.opened_block, await self.block_number()) + window
        give_up = time.monotonic() + window * (self.blocks.seconds_per_block() or 1.0)
        while True:
            advertised = {a.site.lower() for a in await self.chain(self.ledger.advertised_keys, r)}
            missing = {a.lower() for a in self.peers.endpoints} - advertised
            if not missing or await self.block_number() >= deadline or time.monotonic() >= give_up:
                if missing:
                    log.info(
                        "round %d: masking without keys from %s (not advertised in time)", r, sorted(missing)
                    )
                return
            await self.sleep(self.poll)

    async def round_keys(self, r: int, base_hash: bytes, *, fresh: bool = False) -> RoundKeys:
        cached = self._keys.get(r)
        if cached is not None and not fresh:
            return cached
        rows = await self.chain(self.ledger.advertised_keys, r)
        advertised = [Advertised(a.site, a.mask_pk, a.enc_pk) for a in rows]
        keys = RoundKeys(
            advertised, neighbourhood(advertised, graph_seed(r, base_hash), self.params.neighbours)
        )
        self._keys = {k: v for k, v in self._keys.items() if k > r - KEEP_ROUNDS}
        self._keys[r] = keys
        return keys

    def start_sharing(self, r: int, base_hash: bytes) -> None:
        """Share this round's secrets while the site trains: they depend on the keys, not on the update."""
        if r not in self._sharing:
            self._sharing[r] = asyncio.ensure_future(self.share(r, base_hash))

    def stop_sharing(self, r: int) -> None:
        if not self.secure:
            return
        task = self._sharing.pop(r, None)
        if task is not None and not task.done():
            task.cancel()

    async def share(self, r: int, base_hash: bytes) -> RoundKeys:
        """Wait for the round's keys, then give every neighbour (and ourselves) our shares under them."""
        await self.await_keys(r)
        keys = await self.round_keys(r, base_hash, fresh=True)
        secrets = self.secrets(r)
        blobs = make_shares(secrets, keys.advertised, keys.graph, self.params)
        own = next(blob for to, blob in blobs.items() if same_site(to, self.me))  # we hold a share of ours
        self.vault_or_fail().accept(secrets, self.me, own, keys.advertised, keys.graph)
        others = {to: blob for to, blob in blobs.items() if not same_site(to, self.me)}
        sent = await asyncio.gather(*(self.send_shares(r, to, blob) for to, blob in others.items()))
        log.info("round %d: shares delivered to %d of %d neighbours", r, sum(sent), len(others))
        return keys

    async def shared_keys(self, r: int, base_hash: bytes) -> RoundKeys:
        """The keys our shares went out under; shared again when the chain's key set moved since."""
        task = self._sharing.pop(r, None)
        try:
            keys = await task if task is not None else await self.share(r, base_hash)
        except (LedgerError, SecAggError) as exc:  # the early attempt failed: do it now, in the open
            log.warning("round %d: sharing during training failed (%s); sharing again", r, exc)
            keys = await self.share(r, base_hash)
        now = [a.site.lower() for a in await self.chain(self.ledger.advertised_keys, r)]
        if now != [a.site for a in keys.advertised]:
            keys = await self.share(r, base_hash)
        return keys

    async def mask(
        self, r: int, base_hash: bytes, update: Mapping[str, torch.Tensor], n_samples: int
    ) -> tuple[dict[str, torch.Tensor], int]:
        """Mask `update` under the keys our shares went out under. Returns the masked update (int32 views
        of the ring elements) and the key count it was masked under (committed with it)."""
        keys = await self.shared_keys(r, base_hash)
        floats = {k: v.detach().numpy() for k, v in update.items() if is_float(v)}
        masked = await asyncio.to_thread(  # a fraction of a second of keystreams: off the event loop
            mask_update, self.secrets(r), keys.advertised, keys.graph, floats, n_samples, self.params
        )
        out = {k: torch.from_numpy(v.view(np.int32)) for k, v in masked.items()}
        return out, len(keys.advertised)

    def peer_key(self, site: str) -> PeerId:
        """The CURVE key of a site named by privacy (lowercase); KeyError when it is not a member."""
        for account in self.peers.endpoints:
            if same_site(account, site):
                return self.peers.key(account)
        raise KeyError(f"{site} is not an active member")

    async def send_shares(self, r: int, to: str, blob: bytes) -> bool:
        try:
            await self.node.secagg(
                self.peer_key(to), round=r, topic=SecAggTopic.SHARES, body=blob, timeout=SECAGG_TIMEOUT
            )
            return True
        except (TransportError, PeerRejected, KeyError) as exc:
            log.warning("round %d: shares for %s not delivered: %s", r, to, exc)
            return False

    def forget_secrets(self, before: int) -> None:
        """Secrets and shares of rounds long settled can no longer matter: delete them."""
        if self.vault is None:
            return
        self.vault.forget_before(before)
        for path in self.secagg_dir.glob("round-*.secrets"):
            stem = path.stem.removeprefix("round-")
            if stem.isdigit() and int(stem) < before:
                path.unlink(missing_ok=True)

    # --- the leader's side -----------------------------------------------------------------------
    async def masked_sum(self, r: int, info: RoundInfo, base: Mapping[str, torch.Tensor]) -> MaskedSum:
        keys = await self.round_keys(r, info.base_hash)
        committed = {c.site: c.n_samples for c in info.commits}
        self._committed[r] = set(committed)
        unmasker = Unmasker(r, self.params, keys.advertised, keys.graph, committed)
        return MaskedSum(unmasker, base, is_diff=self.task.swarm.send == WeightKind.DIFF)

    async def unmask(self, r: int, term: int, total: MaskedSum) -> None:
        """Ask every survivor for the shares the sum needs; raises BelowThreshold when too few answer."""
        unmasker = total.unmasker
        requests = unmasker.requests(term, self.me)
        answers = await asyncio.gather(
            *(self.ask_survivor(r, term, site, req) for site, req in requests.items())
        )
        for site, answer in zip(requests, answers, strict=True):
            if answer is None:
                continue
            try:
                unmasker.accept(site, answer)
            except SecAggError as exc:
                self.metrics.rejection(f"secagg_{exc.reason}")
                log.warning("round %d: unusable unmask answer from %s: %s", r, site, exc)
        mean = await asyncio.to_thread(unmasker.result)
        total.mean = {k: torch.from_numpy(v) for k, v in mean.items()}
        log.info(
            "round %d: unmasked the sum of %d updates (%d recovered as dropouts, %d never committed)",
            r,
            len(unmasker.survivors),
            len(unmasker.dropped),
            len(unmasker.absent),
        )

    async def ask_survivor(self, r: int, term: int, site: str, request: bytes) -> bytes | None:
        try:
            if same_site(site, self.me):
                return self.answer_unmask(r, request, self.me, term)
            return await self.node.secagg(
                self.peer_key(site), round=r, topic=SecAggTopic.UNMASK, body=request, timeout=SECAGG_TIMEOUT
            )
        except (TransportError, PeerRejected, SecAggError, KeyError) as exc:
            log.warning("round %d: no unmask answer from %s: %s", r, site, exc)
            return None

    # --- answers to peers (the transport handler) ------------------------------------------------
    def vault_or_fail(self) -> ShareVault:
        if self.vault is None:
            raise NoSecrets("off", "secure aggregation is off in this task")
        return self.vault

    def answer_unmask(self, r: int, request: bytes, leader: str, term: int) -> bytes:
        """Our shares for the leader of (r, term); the committers are the chain's, read after election."""
        keys, committed = self._keys[r], self._committed[r]
        return self.vault_or_fail().answer(
            self.secrets(r), request, committed, keys.advertised, keys.graph, leader=leader, term=term
        )

    async def on_secagg(self, peer: PeerId, header: SecAggHeader, body: bytes) -> bytes | Verdict:
        """Every refusal is counted (`swarmd_rejections_total{reason="secagg_..."}`) and logged."""
        sender = self.peers.members.get(peer)
        if sender is None:
            return self.refuse_secagg("not_member", Refusal.NOT_MEMBER, header, peer.hex()[:16], "")
        if self.vault is None:
            return Verdict(False, Refusal.PRIVACY_REFUSED, "secure aggregation is off in this task")
        r = header.round
        try:
            if header.topic == SecAggTopic.SHARES:
                await self.accept_shares(r, sender, body)
                return b"ok"
            if header.topic == SecAggTopic.TRANSCRIPT:  # any member may audit a finalized round
                return await self.serve_transcript(header, sender, body)
            info = await self.chain(self.ledger.round, r)
            await self.round_keys(r, info.base_hash, fresh=sender.lower() not in self._known(r))
            if info.status != RoundStatus.ELECTED or not same_site(info.leader or "", sender):
                # Only the term's leader may ask, and only once the committer set is final.
                why = f"{sender} does not lead round {r} now"
                return self.refuse_secagg("not_leader", Refusal.PRIVACY_REFUSED, header, sender, why)
            self._committed[r] = {c.site for c in info.commits}
            return self.answer_unmask(r, body, sender, info.term)
        except SecAggError as exc:
            why = f"{type(exc).__name__}: {exc}"
            return self.refuse_secagg(exc.reason, Refusal.PRIVACY_REFUSED, header, sender, why)
        except (LedgerError, KeyError) as exc:
            # A round the chain does not know (yet), or whose keys this site never read: transient for
            # an honest peer a block ahead of us, so NOT_READY; counted all the same.
            why = f"round {r} not known here yet: {exc}"
            return self.refuse_secagg("unknown_round", Refusal.NOT_READY, header, sender, why)

    async def accept_shares(self, r: int, sender: str, body: bytes) -> None:
        """Store a neighbour's shares. The round's keys are read from the chain only when this site has
        none cached, or they show another view than the sender's (someone advertised since)."""
        vault = self.vault_or_fail()
        keys = self._keys.get(r)
        if keys is not None and sender.lower() in self._known(r):
            try:
                vault.accept(self.secrets(r), sender, body, keys.advertised, keys.graph)
                return
            except SecAggError as exc:
                if exc.reason != "view":
                    raise
        info = await self.chain(self.ledger.round, r)
        keys = await self.round_keys(r, info.base_hash, fresh=True)
        vault.accept(self.secrets(r), sender, body, keys.advertised, keys.graph)

    def _known(self, r: int) -> set[str]:
        keys = self._keys.get(r)
        return {a.site.lower() for a in keys.advertised} if keys else set()
