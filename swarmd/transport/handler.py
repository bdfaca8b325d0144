"""What the transport hands to its consumer: peer ids, the headers of inbound messages, verdicts,
and the `Handler` protocol the daemon implements. The transport never imports the daemon."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

import torch

from swarmd.codec import Manifest
from swarmd.transport.messages import MetaValue, Refusal, SecAggTopic

PeerId = bytes  # a peer's raw 32-byte CURVE public key, exactly as stored on chain


@dataclass(frozen=True)
class UpdateHeader:
    round: int
    term: int
    digest: bytes  # content hash the sender claimed; the transport already checked the bytes against it
    manifest: Manifest
    meta: dict[str, MetaValue] = field(default_factory=dict)


@dataclass(frozen=True)
class AnnounceHeader:
    round: int
    model_hash: bytes


@dataclass(frozen=True)
class SecAggHeader:
    round: int
    topic: SecAggTopic


@dataclass(frozen=True)
class Verdict:
    """The receiver's answer to an update: accepted, or refused for a named reason. `receipt`: what
    the receiver signed to prove it took the update (65 bytes on the wire; None: it gave none)."""

    ok: bool
    reason: Refusal | None = None
    detail: str = ""  # for people (logs); code decides on `reason` alone
    receipt: bytes | None = None


class Handler(Protocol):
    """Implemented by the daemon. Called on the node's event loop; keep slow work off it."""

    def check_offer(self, peer: PeerId, header: UpdateHeader) -> Verdict:
        """An update is offered: called before it waits for the receive slot and before any byte
        moves. A refusal (e.g. a stale round or term) is the sender's answer at once. Keep it cheap
        and synchronous."""
        ...

    async def on_update(
        self, peer: PeerId, header: UpdateHeader, state: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict:
        """A complete update whose bytes hash to `digest` (== header.digest). The tensors view a
        buffer the transport will not reuse; copy what must outlive the call only if it is mutated.
        Calls overlap: one per update received at once (at most `max_streams`, their payloads within
        `max_inflight_bytes`), so a handler that builds large temporaries bounds them itself."""
        ...

    async def on_announce(self, peer: PeerId, header: AnnounceHeader) -> None:
        """`peer` says it holds the model `header.model_hash` of round `header.round`."""
        ...

    async def on_secagg(self, peer: PeerId, header: SecAggHeader, body: bytes) -> bytes | Verdict:
        """A secure-aggregation message: the answer's body, or a refusing verdict."""
        ...

    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        """The encoded model with this content hash, if this site holds it; None otherwise."""
        ...


class FetchOnly:
    """A handler for a node that only fetches (an auditor, a test peer): it takes no update, answers no
    secure-aggregation message and serves nothing. `why` is what an offer is refused with."""

    def __init__(self, why: str) -> None:
        self.why = why

    def check_offer(self, peer: PeerId, header: UpdateHeader) -> Verdict:
        return Verdict(False, Refusal.NOT_READY, self.why)

    async def on_update(
        self, peer: PeerId, header: UpdateHeader, state: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict:
        return Verdict(False, Refusal.NOT_READY, self.why)

    async def on_secagg(self, peer: PeerId, header: SecAggHeader, body: bytes) -> bytes | Verdict:
        return Verdict(False, Refusal.PRIVACY_REFUSED)

    async def on_announce(self, peer: PeerId, header: AnnounceHeader) -> None:
        return None

    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        return None
