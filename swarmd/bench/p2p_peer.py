"""A standalone libp2p peer, one per process (and per network namespace), driven over stdin/stdout
with JSON lines: the relay tests and the relayed-transfer bench run it.

argv[1]: JSON {"key": account key hex, "listen": [multiaddr], "relay": bool, "relays": [multiaddr],
"model_mb": n, "seed": n, "members": {curve hex: [account, [multiaddr]]}} (the member set it starts
with: a relay admits only members, so it must know a private site before that site reserves), and
"zmq_bind": endpoint, for a ZeroMQ transport node beside it (sealed bulk, as the daemon's), so a bench
can time the direct path over the same links.
It prints {"ready": true, "peer_id", "account", "addrs", "model_hash", "zmq": {"endpoint", "key"} or
null}, then answers one line per command:
  {"op": "peers", "peers": {curve hex: [account, [multiaddr]]}}        -> {"ok": true}
  {"op": "send", "to": curve hex, "mb": n}                              -> {"ok", "reason", "seconds"}
  {"op": "zmq_peers", "peers": {key hex: endpoint}}                     -> {"ok": true}
  {"op": "zmq_send", "to": key hex, "mb": n}                            -> {"ok", "reason", "seconds"}
  {"op": "fetch", "from": curve hex, "hash": hex}                       -> {"ok", "error", "seconds"}
  {"op": "stats"}                                                       -> {"paths", "denied", "rss"}
  {"op": "quit"}
Updates it receives are accepted (after the transport's own limits and hash check) and counted.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from typing import Any

import psutil
import torch
import zmq

from swarmd import codec
from swarmd.codec import Manifest
from swarmd.errors import SwarmError
from swarmd.transport.handler import PeerId, UpdateHeader, Verdict
from swarmd.transport.node import Node
from swarmd.transport.p2p.service import P2PConfig, P2PPeer, P2PService


class _Accept:
    def __init__(self, model: tuple[Manifest, list[memoryview]] | None) -> None:
        self.model = model
        self.received: list[str] = []

    def check_offer(self, peer: PeerId, header: UpdateHeader) -> Verdict:
        return Verdict(True)

    async def on_update(
        self, peer: PeerId, header: UpdateHeader, state: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict:
        self.received.append(codec.hash_hex(digest))
        return Verdict(True)

    async def on_announce(self, peer: PeerId, header: Any) -> None:
        return None

    async def on_secagg(self, peer: PeerId, header: Any, body: bytes) -> bytes | Verdict:
        return Verdict(False)

    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        if self.model is not None and codec.hash_frames(*self.model) == model_hash:
            return self.model
        return None


def _model(mb: float, seed: int) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return {"w": torch.randn(int(mb * 1e6 / 4), generator=gen)}


def _say(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


async def _command(
    svc: P2PService, node: Node | None, handler: _Accept, cmd: dict[str, Any], sent: int
) -> dict[str, Any]:
    """One command's answer; `sent` numbers this update (the ZeroMQ path keys transfers by round)."""
    op = cmd.get("op")
    if op == "peers":
        svc.set_peers({bytes.fromhex(k): P2PPeer(v[0], tuple(v[1])) for k, v in cmd["peers"].items()})
        return {"ok": True}
    if op == "zmq_peers" and node is not None:
        node.set_peers({bytes.fromhex(k): v for k, v in cmd["peers"].items()})
        return {"ok": True}
    if op in ("send", "zmq_send") and (op == "send" or node is not None):
        state = _model(cmd["mb"], cmd.get("seed", 1))
        to = bytes.fromhex(cmd["to"])
        t0 = time.monotonic()  # both paths timed from the state in memory to the receiver's verdict
        try:
            if op == "send":
                verdict = await svc.send_update(to, round=sent, term=1, state=state)
            else:
                assert node is not None
                payload = codec.encode(state)
                digest = codec.hash_frames(*payload)
                verdict = await node.send_update(
                    to, round=sent, term=1, payload=payload, digest=digest, timeout=300
                )
        except SwarmError as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - t0}
        return {"ok": verdict.ok, "reason": str(verdict.reason), "seconds": time.monotonic() - t0}
    t0 = time.monotonic()
    if op == "fetch":
        try:
            got = await svc.fetch_model(
                bytes.fromhex(cmd["from"]), bytes.fromhex(cmd["hash"]), max_bytes=1 << 31
            )
        except SwarmError as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - t0}
        return {"ok": True, "hash": codec.content_hash(got).hex(), "seconds": time.monotonic() - t0}
    if op == "stats":
        paths = {
            k.hex(): {"path": v.path, "out": v.bytes_out, "in": v.bytes_in} for k, v in svc.paths.items()
        }
        rss = psutil.Process().memory_info().rss
        return {"paths": paths, "denied": svc.gate.denied, "received": handler.received, "rss": rss}
    return {"error": f"unknown op {op!r}"}


async def _zmq_node(handler: _Accept, bind: str | None) -> Node | None:
    if not bind:
        return None
    public, secret = zmq.curve_keypair()
    node = Node(handler, bind=bind, public_key=public, secret_key=secret, max_bytes=1 << 31, bulk="aead")
    await node.start()
    return node


async def main(spec: dict[str, Any]) -> None:
    model = codec.encode(_model(spec["model_mb"], spec.get("seed", 7))) if spec.get("model_mb") else None
    handler = _Accept(model)
    config = P2PConfig(
        listen=tuple(spec.get("listen", ())),
        relay=bool(spec.get("relay")),
        relays=tuple(spec.get("relays", ())),
        relay_max_bytes=int(spec.get("relay_max_bytes", 1 << 30)),
    )
    svc = P2PService(handler, account_key=bytes.fromhex(spec["key"]), max_bytes=1 << 31, config=config)
    svc.set_peers({bytes.fromhex(k): P2PPeer(v[0], tuple(v[1])) for k, v in spec.get("members", {}).items()})
    await svc.start()
    if config.relays:
        await svc.wait_reserved(30.0)
    model_hash = codec.hash_frames(*model).hex() if model else None
    node = await _zmq_node(handler, spec.get("zmq_bind"))
    _say(
        {
            "ready": True,
            "peer_id": svc.peer_id,
            "account": svc.account,
            "addrs": svc.addresses(),
            "model_hash": model_hash,
            "zmq": {"endpoint": node.endpoint, "key": node.peer_id.hex()} if node else None,
        }
    )
    loop = asyncio.get_running_loop()
    sent = 0
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            cmd = json.loads(line)
            if cmd.get("op") == "quit":
                break
            sent += 1
            _say(await _command(svc, node, handler, cmd, sent))
    finally:
        if node is not None:
            await node.close()
        await svc.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
