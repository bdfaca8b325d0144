"""The libp2p path of a site, as the daemon sees it (asyncio side): start/close, the member set, and
the same calls as `Node` (`send_update`, `fetch_model`) with the same `Handler`, limits and checks.

Everything libp2p runs in the trio thread (runtime.py); the handler's calls come back to the daemon's
loop through the bridge. Peers are named as everywhere in the transport, by their CURVE key
(`PeerId`); `set_peers` says which account and which multiaddrs (direct, or `.../p2p-circuit/p2p/<id>`
through a relay) each one has. Bytes are counted per peer and per path (direct, relayed).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import ParamSpec, TypeVar

import torch
import trio
from libp2p.abc import INetStream
from libp2p.peer.id import ID

from swarmd import codec
from swarmd.codec import Manifest
from swarmd.errors import HashMismatch, PeerRejected, TransportError
from swarmd.transport import messages as m
from swarmd.transport.context import Limits
from swarmd.transport.handler import Handler, PeerId, UpdateHeader, Verdict
from swarmd.transport.messages import Refusal
from swarmd.transport.p2p import keys, requests, wire
from swarmd.transport.p2p.host import Gate, HostConfig, P2PHost
from swarmd.transport.p2p.requests import REQUEST_PROTO
from swarmd.transport.p2p.runtime import TrioThread, to_asyncio

log = logging.getLogger("swarmd.transport.p2p")

P = ParamSpec("P")
T = TypeVar("T")

UPDATE_PROTO = f"/swarmd/update/{m.PROTOCOL_VERSION}"
FETCH_PROTO = f"/swarmd/fetch/{m.PROTOCOL_VERSION}"


@dataclass(frozen=True)
class P2PPeer:
    """A member as the libp2p path knows it: its account and the multiaddrs it advertised."""

    account: str
    addrs: tuple[str, ...] = ()

    @property
    def peer_id(self) -> ID | None:
        for addr in self.addrs:
            tail = addr.rsplit("/p2p/", 1)
            if len(tail) == 2:
                return ID.from_base58(tail[1])
        return None


@dataclass
class PathCounters:
    path: str = "none"  # how the last stream to or from this peer went: "direct" or "relayed"
    bytes_out: dict[str, int] = field(default_factory=dict)
    bytes_in: dict[str, int] = field(default_factory=dict)

    def count(self, path: str, out: int = 0, inn: int = 0) -> None:
        self.path = path
        self.bytes_out[path] = self.bytes_out.get(path, 0) + out
        self.bytes_in[path] = self.bytes_in.get(path, 0) + inn


@dataclass(frozen=True)
class P2PConfig:
    listen: tuple[str, ...] = ()  # empty: this site opens no listening socket
    relay: bool = False  # offer circuit relay v2 to the other members
    relays: tuple[str, ...] = ()  # relays to hold a reservation on (`/ip4/../tcp/../p2p/<id>`)
    relay_max_bytes: int = 1 << 30
    relay_max_seconds: int = 3600
    shutdown_timeout: float = 3.0
    reserve_every: float = 2.0  # seconds between checks that every relay still holds our reservation


class P2PService:
    """One site's libp2p path. `await start()`, `set_peers(...)`, the calls, `await close()`."""

    def __init__(
        self,
        handler: Handler,
        *,
        account_key: bytes,
        max_bytes: int,
        config: P2PConfig,
        limits: Limits | None = None,
    ) -> None:
        self.handler, self.max_bytes, self.config = handler, max_bytes, config
        self.limits = limits or Limits()
        self.account = keys.account_address(account_key)
        self.gate = Gate()
        self.peers: dict[PeerId, P2PPeer] = {}
        self._by_account: dict[str, PeerId] = {}
        self.paths: dict[PeerId, PathCounters] = {}
        host_cfg = HostConfig(
            key=keys.keypair(account_key),
            listen=config.listen,
            relay=config.relay,
            relay_max_bytes=config.relay_max_bytes,
            relay_max_seconds=config.relay_max_seconds,
        )
        handlers = {
            UPDATE_PROTO: self._serve_update,
            FETCH_PROTO: self._serve_fetch,
            REQUEST_PROTO: self._serve_request,
        }
        self.host = P2PHost(host_cfg, self.gate, handlers)
        self.peer_id = str(self.host.peer_id)
        self.circuits: list[str] = []
        self._thread = TrioThread()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._slots: trio.Semaphore | None = None

    # --- lifecycle -------------------------------------------------------------------------------
    async def start(self) -> None:
        """Start the host (and the relay service), try a reservation on each configured relay once,
        then keep them: a relay that refuses now (it has not seen this site join yet, or this site
        does not know its members yet) or that restarts later is reserved on again."""
        self._loop = asyncio.get_running_loop()
        await asyncio.to_thread(self._thread.start)
        await self._thread.start_service(self.host.serve)
        self.circuits = [self.host.circuit(r) for r in self.config.relays]
        if self.config.relays:
            keep = functools.partial(
                self.host.keep_reservations, self.config.relays, self.config.reserve_every
            )
            await self._thread.start_service(keep)

    def reserved(self) -> list[str]:
        """The relays this site holds a live reservation on now."""
        return [r for r in self.config.relays if self.host.reserved_on(r)]

    async def wait_reserved(self, timeout: float) -> list[str]:
        """Until at least one relay holds a reservation; TransportError after `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while not (held := self.reserved()):
            if time.monotonic() > deadline:
                raise TransportError(
                    f"no relay took a reservation within {timeout:.0f} s", hint="see the log"
                )
            await asyncio.sleep(0.05)
        return held

    def addresses(self) -> list[str]:
        """What peers can dial: our listeners with our peer ID, then our circuits through relays."""
        own = [a if "/p2p/" in a else f"{a}/p2p/{self.peer_id}" for a in self.host.addrs()]
        return own + list(self.circuits)

    async def close(self) -> None:
        await asyncio.to_thread(self._thread.close, self.config.shutdown_timeout)

    # --- membership ------------------------------------------------------------------------------
    def set_peers(self, peers: Mapping[PeerId, P2PPeer]) -> None:
        """Replace the member set: {CURVE key: (account, multiaddrs)}, without this site. Takes effect
        for new connections and streams at once."""
        self.peers = {bytes(k): v for k, v in peers.items()}
        self._by_account = {v.account: k for k, v in self.peers.items()}
        self.gate.members = frozenset(self._by_account)

    def _counters(self, peer: PeerId) -> PathCounters:
        return self.paths.setdefault(peer, PathCounters())

    # --- client calls ----------------------------------------------------------------------------
    async def send_update(
        self,
        peer: PeerId,
        *,
        round: int,
        term: int,
        state: Mapping[str, torch.Tensor] | None = None,
        payload: tuple[Manifest, list[memoryview]] | None = None,
        digest: bytes | None = None,
        meta: Mapping[str, m.MetaValue] | None = None,
    ) -> Verdict:
        """Stream an update to `peer` over libp2p; the receiver's verdict (as `Node.send_update`)."""
        manifest, frames = payload if payload is not None else codec.encode(state or {})
        if digest is None:
            digest = codec.hash_frames(manifest, frames)
        offer = m.UpdateOffer(
            req=1, round=round, term=term, digest=digest, manifest=manifest, meta=dict(meta or {})
        )
        return await self._thread.call(self._send_update, peer, offer, frames)

    async def _send_update(self, peer: PeerId, offer: m.UpdateOffer, frames: list[memoryview]) -> Verdict:
        stream, path = await self._open(peer, UPDATE_PROTO)
        lim, counters = self.limits, self._counters(peer)
        try:
            counters.count(path, out=await wire.send_msg(stream, offer))
            with trio.fail_after(lim.request_timeout):
                first = await wire.recv_msg(stream, 64)
            if isinstance(first, m.Grant):
                sent = await wire.send_payload(
                    stream, frames, lim.chunk_size, lim.stall_timeout, first.credits
                )
                counters.count(path, out=sent)
                with trio.fail_after(lim.request_timeout):
                    first = await wire.recv_msg(stream, 64)
            if not isinstance(first, m.Reply):
                raise wire.StreamBroken(Refusal.BAD_STREAM, f"expected a reply, got {first.KIND}")
            return Verdict(first.ok, first.reason, first.detail, first.receipt)
        except trio.TooSlowError:
            raise TransportError(f"no answer over libp2p within {lim.request_timeout:.0f} s") from None
        except wire.StreamBroken as exc:
            if exc.reason is Refusal.DISCONNECTED:  # as on ZeroMQ: a dropped path is an error, retried
                raise TransportError(f"update over libp2p broke off: {exc}") from None
            return Verdict(False, exc.reason, str(exc))
        finally:
            await _reset(stream)

    async def ping(self, peer: PeerId, *, timeout: float | None = None) -> float:
        """Round-trip time to `peer` over libp2p, in seconds."""
        answer = await self._thread.call(self._ask, peer, requests.ping(time.monotonic()), timeout)
        return requests.rtt(answer)

    async def announce(
        self, peer: PeerId, *, round: int, model_hash: bytes, timeout: float | None = None
    ) -> None:
        """As `Node.announce`, over libp2p."""
        m.check_announce(await self._thread.call(self._ask, peer, m.Announce(1, round, model_hash), timeout))

    async def secagg(
        self, peer: PeerId, *, round: int, topic: m.SecAggTopic, body: bytes, timeout: float | None = None
    ) -> bytes:
        """As `Node.secagg`, over libp2p."""
        answer = await self._thread.call(self._ask, peer, m.SecAgg(1, round, topic, body), timeout)
        return m.secagg_body(answer, topic)

    async def _ask(self, peer: PeerId, msg: m.Message, timeout: float | None) -> m.Message:
        stream, path = await self._open(peer, REQUEST_PROTO)
        try:
            answer = await requests.ask(stream, msg, timeout or self.limits.request_timeout)
            self._counters(peer).count(path)
            return answer
        finally:
            await _reset(stream)

    async def _serve_request(self, stream: INetStream, account: str) -> None:
        peer = self._by_account[account]
        self._counters(peer).count(self.host.path_to(stream.muxed_conn.peer_id))
        try:
            await requests.answer(self.handler, self._asyncio(), peer, stream)
        except wire.StreamBroken as exc:
            log.warning("request from %s over libp2p failed: %s", account, exc)

    async def fetch_model(
        self, peer: PeerId, model_hash: bytes, *, max_bytes: int
    ) -> dict[str, torch.Tensor]:
        """Download and verify the model `model_hash` from `peer` over libp2p (as `Node.fetch_model`)."""
        manifest, buf = await self._thread.call(self._fetch, peer, model_hash, max_bytes)
        return codec.decode_flat(manifest, buf)

    async def _fetch(self, peer: PeerId, model_hash: bytes, max_bytes: int) -> tuple[Manifest, bytearray]:
        stream, path = await self._open(peer, FETCH_PROTO)
        lim, counters = self.limits, self._counters(peer)
        try:
            fetch = m.Fetch(req=1, model_hash=model_hash, max_bytes=max_bytes, key=None)
            counters.count(path, out=await wire.send_msg(stream, fetch))
            with trio.fail_after(lim.request_timeout):
                serve = await wire.recv_msg(stream, lim.max_tensors)
            if isinstance(serve, m.Reply):
                raise PeerRejected(f"peer refused the fetch: {serve.reason}: {serve.detail}")
            if not isinstance(serve, m.Serve):
                raise TransportError(f"expected a serve, got {serve.KIND}")
            if serve.manifest.total_nbytes > max_bytes:
                raise PeerRejected(f"served model of {serve.manifest.total_nbytes} bytes is over {max_bytes}")
            buf, digest = await wire.recv_payload(
                stream, serve.manifest, serve.sid, lim.chunk_size, lim.window, lim.stall_timeout
            )
            counters.count(path, inn=len(buf))
            if digest != model_hash:  # or a model named before protocol 4 (codec.digest_against)
                digest = await trio.to_thread.run_sync(
                    codec.digest_against, serve.manifest, [buf], digest, model_hash
                )
            if digest != model_hash:
                raise HashMismatch(
                    f"served model hashes to {codec.hash_hex(digest)}, not {codec.hash_hex(model_hash)}"
                )
            return serve.manifest, buf
        except trio.TooSlowError:
            raise TransportError(f"no serve over libp2p within {lim.request_timeout:.0f} s") from None
        except wire.StreamBroken as exc:
            raise TransportError(f"fetch over libp2p failed: {exc.reason}: {exc}") from None
        finally:
            await _reset(stream)

    async def _open(self, peer: PeerId, proto: str) -> tuple[INetStream, str]:
        info = self.peers.get(bytes(peer))
        if info is None or info.peer_id is None:
            raise PeerRejected("not a member with a libp2p address", hint="see `swarm status`")
        return await self.host.open(info.peer_id, list(info.addrs), proto)

    # --- serving (trio side; the handler runs on the daemon's loop) ------------------------------
    def _asyncio(self) -> asyncio.AbstractEventLoop:
        assert self._loop is not None
        return self._loop

    async def _serve_update(self, stream: INetStream, account: str) -> None:
        peer = self._by_account[account]
        path, counters, lim = self.host.path_to(stream.muxed_conn.peer_id), self._counters(peer), self.limits
        try:
            offer = await wire.recv_msg(stream, lim.max_tensors)
            if not isinstance(offer, m.UpdateOffer):
                raise wire.StreamBroken(Refusal.BAD_STREAM, f"expected an update, got {offer.KIND}")
            verdict = await self._receive(stream, peer, offer, path, counters)
        except wire.StreamBroken as exc:
            verdict = Verdict(False, exc.reason, str(exc))
            log.warning("update from %s over libp2p refused: %s", account, exc)
        with contextlib.suppress(wire.StreamBroken):
            await wire.send_msg(
                stream, m.Reply(1, verdict.ok, verdict.reason, verdict.detail, verdict.receipt)
            )

    async def _receive(
        self, stream: INetStream, peer: PeerId, offer: m.UpdateOffer, path: str, counters: PathCounters
    ) -> Verdict:
        lim = self.limits
        if offer.manifest.total_nbytes > self.max_bytes:
            return Verdict(
                False, Refusal.TOO_LARGE, f"{offer.manifest.total_nbytes} bytes > {self.max_bytes}"
            )
        header = UpdateHeader(offer.round, offer.term, offer.digest, offer.manifest, offer.meta)
        verdict = await to_asyncio(self._asyncio(), _sync(self.handler.check_offer, peer, header))
        if not verdict.ok:
            return verdict
        if self._slots is None:
            self._slots = trio.Semaphore(lim.max_streams)
        async with self._slots:
            sid = secrets.token_bytes(16)
            buf, digest = await wire.recv_payload(
                stream, offer.manifest, sid, lim.chunk_size, lim.window, lim.stall_timeout
            )
        counters.count(path, inn=len(buf))
        if digest != offer.digest:
            return Verdict(False, Refusal.HASH_MISMATCH, "the bytes do not hash to the offered digest")
        state = codec.decode_flat(offer.manifest, buf)
        try:
            return await to_asyncio(self._asyncio(), self.handler.on_update(peer, header, state, digest))
        except Exception as exc:
            log.exception("handler failed on an update over libp2p")
            return Verdict(False, Refusal.HANDLER_ERROR, type(exc).__name__)

    async def _serve_fetch(self, stream: INetStream, account: str) -> None:
        peer = self._by_account[account]
        path, counters, lim = self.host.path_to(stream.muxed_conn.peer_id), self._counters(peer), self.limits
        try:
            fetch = await wire.recv_msg(stream, 64)
            if not isinstance(fetch, m.Fetch):
                raise wire.StreamBroken(Refusal.BAD_STREAM, f"expected a fetch, got {fetch.KIND}")
            served = await to_asyncio(self._asyncio(), _sync(self.handler.serve_model, fetch.model_hash))
            if served is None or served[0].total_nbytes > fetch.max_bytes:
                why = Refusal.NOT_FOUND if served is None else Refusal.TOO_LARGE
                await wire.send_msg(stream, m.Reply(fetch.req, False, why, ""))
                return
            manifest, frames = served
            await wire.send_msg(stream, m.Serve(fetch.req, secrets.token_bytes(16), manifest, None))
            grant = await wire.recv_msg(stream, 64)
            upto = grant.credits if isinstance(grant, m.Grant) else 0
            sent = await wire.send_payload(stream, frames, lim.chunk_size, lim.stall_timeout, upto)
            counters.count(path, out=sent)
            # the fetcher closes when it has every byte; wait for that so the last chunk is not cut
            with trio.move_on_after(lim.request_timeout), contextlib.suppress(wire.StreamBroken):
                await wire.read_exact(stream, 1)
        except wire.StreamBroken as exc:
            log.warning("serving %s over libp2p failed: %s", account, exc)


async def _sync(fn: Callable[P, T], *args: P.args, **kwargs: P.kwargs) -> T:
    """A synchronous handler call, made on the daemon's loop (the handler is not thread-safe)."""
    return fn(*args, **kwargs)


async def _reset(stream: INetStream) -> None:
    with contextlib.suppress(Exception):
        await stream.reset()
