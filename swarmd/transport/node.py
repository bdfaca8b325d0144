"""The transport node: the one object the daemon holds, the front of this site's transport.

It owns the lifecycle (bind on `start`, release everything on `close`), the ZeroMQ context and the
ZAP authenticator, the member set (`set_peers`), the counters (`stats`) and the `Limits`. The work
is done by its two sides, which share one `Context` and one table of open streams (flow.py):
- server.py, the serving side: the control ROUTER, bound on the site endpoint, CURVE server, whose
  ZAP handler admits only the CURVE keys of current members; and the bulk ROUTER, plain TCP, which
  admits (ZAP, PLAIN) only members holding the token we handed them over CURVE, and
  carries only chunks sealed under a random per-stream key that travelled over CURVE, plus the
  sealed credit grants of those streams, in a fixed layout parsed without msgpack (bulk.py; see
  stream.py and docs/transport.md for why);
- client.py, the client side: one CURVE control DEALER per peer (and a bulk DEALER, made on first
  use) for our requests and their answers. The daemon can send an update while receiving others.

Every bad input is logged (rate-limited per peer), counted in `stats.rejections[reason]` and dropped;
it never ends the node. A member's control traffic is held to per-peer budgets (budget.py, `rate`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Mapping

import torch
import zmq
import zmq.asyncio
from zmq.auth.asyncio import AsyncioAuthenticator
from zmq.utils import z85

from swarmd import codec
from swarmd.codec import Manifest
from swarmd.errors import IdentityError, TransportError
from swarmd.transport import messages as m
from swarmd.transport.client import Client
from swarmd.transport.context import BulkMode, Context, Limits, NodeStats
from swarmd.transport.flow import Flows
from swarmd.transport.handler import Handler, PeerId, Verdict
from swarmd.transport.loop import monitor_loop
from swarmd.transport.server import Server

__all__ = ["ZAP_DOMAIN", "BulkMode", "Limits", "Node", "NodeStats"]

log = logging.getLogger("swarmd.transport")

ZAP_DOMAIN = "swarmd"
BULK_ZAP_DOMAIN = "swarmd-bulk"
_HANDSHAKE_FAILED = (
    zmq.EVENT_HANDSHAKE_FAILED_NO_DETAIL
    | zmq.EVENT_HANDSHAKE_FAILED_PROTOCOL
    | zmq.EVENT_HANDSHAKE_FAILED_AUTH
)


class _Zap(AsyncioAuthenticator):
    """ZAP for both ROUTERs: CURVE keys of members (control), PLAIN member id + the token we handed
    that member over CURVE (bulk), so a stranger's connection to the bulk port ends in its handshake
    and libzmq never reads a frame of it."""

    def __init__(self, zctx: zmq.asyncio.Context, ctx: Context) -> None:
        super().__init__(zctx, log=logging.getLogger("swarmd.transport.zap"))
        self._node_ctx = ctx

    def _authenticate_plain(self, domain: str, username: str, password: str) -> tuple[bool, bytes]:
        if domain == BULK_ZAP_DOMAIN and self._node_ctx.bulk_login_ok(username, password):
            return True, b"OK"
        self._node_ctx.stats.handshakes_denied += 1
        return False, b"not a bulk session of a member"


def _z85_bytes(key: str | bytes) -> bytes:
    return key.encode("ascii") if isinstance(key, str) else key


def _curve_key(z85_key: bytes) -> bytes:
    """The 32 raw bytes of a z85 CURVE key (40 characters); IdentityError if it is not one."""
    try:
        raw = z85.decode(z85_key) if len(z85_key) == 40 else b""
    except (ValueError, KeyError, TypeError):
        raw = b""
    if len(raw) != 32:
        raise IdentityError(
            "a CURVE key must be 40 z85 characters", hint="see `swarm init` / zmq.curve_keypair()"
        )
    return raw


class Node:
    """One site's transport. Use `async with Node(...) as node:` or `await start()` / `await close()`."""

    def __init__(
        self,
        handler: Handler,
        *,
        bind: str,
        public_key: str | bytes,
        secret_key: str | bytes,
        max_bytes: int,
        limits: Limits | None = None,
        bulk: BulkMode = "aead",
        bulk_bind: str | None = None,
    ) -> None:
        public, secret = _z85_bytes(public_key), _z85_bytes(secret_key)
        self.peer_id: PeerId = _curve_key(public)
        _curve_key(secret)
        self._ctx = Context(handler, limits or Limits(), max_bytes, bulk, public, secret)
        self._flows = Flows(self._ctx)
        self._client = Client(self._ctx, self._flows)
        self._server: Server | None = None
        self._bind = bind
        self._bulk_bind = bulk_bind
        self._auth: _Zap | None = None
        self._router_mon: zmq.asyncio.Socket | None = None
        self._bulk_mon: zmq.asyncio.Socket | None = None
        self.endpoint = ""

    @property
    def handler(self) -> Handler:
        return self._ctx.handler

    @property
    def limits(self) -> Limits:
        return self._ctx.limits

    def set_limits(self, limits: Limits) -> None:
        """Change limits at run time, e.g. `dataclasses.replace(node.limits, stall_timeout=...)` with
        the stall timeout a leader derives from its exchange deadline; new streams use them, and new
        connections the frame limits (`max_tensors`, `chunk_size`)."""
        self._ctx.limits = limits
        if self._server is not None:  # libzmq copies socket options into each new connection
            self._server.router.maxmsgsize = self._ctx.max_frame
            if self._server.bulk is not None:
                self._server.bulk.maxmsgsize = self._ctx.max_bulk_frame
                self._server.bulk.handshake_ivl = max(1, int(limits.bulk_handshake_timeout * 1000))

    @property
    def max_bytes(self) -> int:
        return self._ctx.max_bytes

    @property
    def bulk_mode(self) -> BulkMode:
        return self._ctx.bulk_mode

    @property
    def stats(self) -> NodeStats:
        return self._ctx.stats

    @property
    def bulk_port(self) -> int | None:
        """The port of the bulk ROUTER once started (bulk mode `aead`), else None."""
        return self._ctx.bulk_port

    @property
    def max_frame(self) -> int:
        """`maxmsgsize` of every socket: a header or a sealed chunk fits, anything bigger drops the link."""
        return self._ctx.max_frame

    # --- lifecycle --------------------------------------------------------------------------------
    async def __aenter__(self) -> Node:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> None:
        """Bind the sockets and start serving; raise TransportError (and release everything) if not."""
        try:
            self._open()
        except BaseException:
            await self.close()
            raise

    def _open(self) -> None:
        ctx = self._ctx
        ctx.zmq_ctx = zmq.asyncio.Context()
        if not self._bind:  # a site that accepts no connection (issue 18): client sockets only
            log.info("transport started without a listening socket (outbound only)")
            return
        self._auth = _Zap(ctx.zmq_ctx, ctx)
        self._auth.start()
        self._auth.configure_curve_callback(domain=ZAP_DOMAIN, credentials_provider=self)
        router = ctx.socket(zmq.ROUTER)
        router.curve_server = True
        router.curve_publickey = ctx.public
        router.curve_secretkey = ctx.secret
        router.zap_domain = ZAP_DOMAIN.encode()
        self.endpoint = _bind_socket(router, self._bind)
        bulk: zmq.asyncio.Socket | None = None
        if ctx.bulk_mode == "aead":
            bulk = self._open_bulk()
        self._router_mon = router.get_monitor_socket()
        ctx.spawn(monitor_loop(self._router_mon, ctx.stats))
        self._server = Server(ctx, self._flows, router, bulk)
        self._server.start()
        log.info("transport listening on %s (bulk port %s)", self.endpoint, ctx.bulk_port)

    def _open_bulk(self) -> zmq.asyncio.Socket:
        """The bulk ROUTER: PLAIN login checked by ZAP, a short handshake deadline, and a monitor that
        counts every connection closed in its handshake (`bulk_handshake`: silent, not ZMTP, or not
        logged in), so a stranger can neither hold a socket open nor go unseen."""
        ctx = self._ctx
        bulk = ctx.socket(zmq.ROUTER, bulk=True)
        bulk.plain_server = True
        bulk.zap_domain = BULK_ZAP_DOMAIN.encode()
        bulk.handshake_ivl = max(1, int(ctx.limits.bulk_handshake_timeout * 1000))
        ep = _bind_socket(bulk, self._bulk_bind or self._default_bulk_bind())
        ctx.bulk_port = int(ep.rsplit(":", 1)[1])
        self._bulk_mon = bulk.get_monitor_socket(_HANDSHAKE_FAILED | zmq.EVENT_MONITOR_STOPPED)

        def on_event(kind: int) -> None:
            if kind & _HANDSHAKE_FAILED:
                ctx.reject("bulk_handshake", None, "a connection to the bulk port ended in its handshake")

        ctx.spawn(monitor_loop(self._bulk_mon, ctx.stats, on_event))
        return bulk

    async def close(self) -> None:
        # Stop monitors while their readers are open: libzmq blocks sending the final event otherwise.
        if self._server is not None:
            for sock in (self._server.router, self._server.bulk):
                with contextlib.suppress(zmq.ZMQError):
                    if sock is not None:
                        sock.disable_monitor()
        self._client.disable_monitors()
        tasks = [*self._ctx.tasks, *self._client.tasks()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._client.close_sockets()
        for mon in (self._router_mon, self._bulk_mon):
            if mon is not None:
                mon.close(linger=0)
        if self._auth is not None:
            self._auth.stop()
        if self._ctx.zmq_ctx is not None:
            self._ctx.zmq_ctx.destroy(linger=0)
        # closing twice (a failed start, then the caller's close) must be harmless
        self._server, self._router_mon, self._bulk_mon, self._auth = None, None, None, None
        self._ctx.zmq_ctx = None

    def _default_bulk_bind(self) -> str:
        host, port = self._bind.rsplit(":", 1)
        return f"{host}:{int(port) + 1}" if port.isdigit() and int(port) > 0 else f"{host}:*"

    # --- membership -------------------------------------------------------------------------------
    def set_peers(self, peers: Mapping[PeerId, str], labels: Mapping[PeerId, str] | None = None) -> None:
        """Replace the member set: {raw CURVE public key: endpoint}. Takes effect for new handshakes
        at once, for messages on open connections at once, and drops connections to removed peers.
        `labels` names members in log lines (their site names); unlabelled ones show a key prefix."""
        new = {bytes(k): _zmq_part(v) for k, v in peers.items()}
        self._client.keep_only(new)
        self._flows.end_inbound_outside(new)
        self._ctx.members = new
        self._ctx.labels = {bytes(k): v for k, v in (labels or {}).items() if bytes(k) in new}
        self._ctx.forget_outside(new)

    def callback(self, domain: str, key: bytes) -> bool:
        """ZAP credentials provider: admit a CURVE key only if it belongs to a current member."""
        try:
            allowed = z85.decode(key) in self._ctx.members
        except ValueError:
            allowed = False
        if not allowed:
            self._ctx.stats.handshakes_denied += 1
            log.warning("refused a CURVE handshake from a non-member key %s", key[:12])
        return allowed

    # --- requests (client.py does the work) -------------------------------------------------------
    async def ping(self, peer: PeerId, *, timeout: float | None = None) -> float:
        """Round-trip time to `peer` in seconds, over the authenticated channel."""
        return await self._client.ping(peer, timeout)

    async def announce(
        self, peer: PeerId, *, round: int, model_hash: bytes, timeout: float | None = None
    ) -> None:
        """Tell `peer` this site holds model `model_hash` of `round`; raise if it refused."""
        await self._client.announce(peer, round, model_hash, timeout)

    async def secagg(
        self, peer: PeerId, *, round: int, topic: m.SecAggTopic, body: bytes, timeout: float | None = None
    ) -> bytes:
        """Send a secure-aggregation message to `peer`; its answer's body. PeerRejected on a refusal."""
        return await self._client.secagg(peer, round, topic, body, timeout)

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
        timeout: float | None = None,
    ) -> Verdict:
        """Stream an update (a state dict, or an already encoded payload) to `peer`.

        `digest` is the content hash committed on chain; computed from the payload when omitted.
        The receiver checks the bytes against it. `timeout` bounds the wait for a stream slot at the
        receiver and for its verdict (default: limits.request_timeout); a stalled stream fails after
        limits.stall_timeout. Returns the receiver's verdict; raises TransportError/PeerRejected when
        no verdict can be had.
        """
        manifest, frames = payload if payload is not None else codec.encode(state or {})
        if digest is None:
            digest = codec.hash_frames(manifest, frames)
        offer = self._client.new_offer(round, term, digest, manifest, meta or {})
        return await self._client.send_update(peer, offer, frames, timeout)

    async def fetch_model(
        self,
        peer: PeerId,
        model_hash: bytes,
        *,
        max_bytes: int,
        timeout: float | None = None,
        relay: Callable[[], object] | None = None,
    ) -> dict[str, torch.Tensor]:
        """Download the model with content hash `model_hash` from `peer`, verified against that hash.

        With `relay`, members that fetch `model_hash` from this node meanwhile are served it as it
        arrives, chunk by chunk (cut-through); `relay()` is called once the stream starts, so the
        caller can announce it. Each of them checks the hash itself; if this download fails, theirs
        fail at once with RelayFailed.

        Raises PeerRejected when the peer does not hold it (or refuses; RelayFailed when it was relaying
        it and its own download failed), HashMismatch when the bytes do not hash to `model_hash`,
        StreamFailed when the stream stalled or the peer stopped it, TransportError on timeouts.
        """
        return await self._client.fetch_model(peer, model_hash, max_bytes, timeout, relay)


def _zmq_part(endpoint: str) -> str:
    """The ZeroMQ endpoint in an advertised one that may also list libp2p multiaddrs (issue 18:
    `tcp://host:7700 /p2p/<peer id>`); a private site's has none and is kept as written (never dialled
    by a HybridNode; a plain Node's dial of it fails as a TransportError)."""
    for part in endpoint.split():
        if part.startswith(("tcp://", "ipc://")):
            return part
    return endpoint


def _bind_socket(s: zmq.asyncio.Socket, endpoint: str) -> str:
    try:
        s.bind(endpoint)
    except zmq.ZMQError as exc:
        raise TransportError(f"cannot bind {endpoint}: {exc}") from exc
    last = s.last_endpoint
    return last.decode() if isinstance(last, bytes) else str(last)
