"""A standalone libp2p peer, one per process (and per network namespace), driven over stdin/stdout
with JSON lines: the relay tests and the relayed-transfer bench run it.

argv[1]: JSON {"key": account key hex, "listen": [multiaddr], "relay": bool, "relays": [multiaddr],
"model_mb": n, "seed": n, "members": {curve hex: [account, [multiaddr]]}} (the member set it starts
with: a relay admits only members, so it must know a private site before that site reserves).
It prints {"ready": true, "peer_id", "account", "addrs", "model_hash"}, then answers one line per command:
  {"op": "peers", "peers": {curve hex: [account, [multiaddr]]}}        -> {"ok": true}
  {"op": "send", "to": curve hex, "mb": n}                              -> {"ok", "reason", "seconds"}
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

from swarmd import codec
from swarmd.codec import Manifest
from swarmd.errors import SwarmError
from swarmd.transport.handler import PeerId, UpdateHeader, Verdict
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


async def _command(svc: P2PService, handler: _Accept, cmd: dict[str, Any]) -> dict[str, Any]:
    op = cmd.get("op")
    t0 = time.monotonic()
    if op == "peers":
        svc.set_peers({bytes.fromhex(k): P2PPeer(v[0], tuple(v[1])) for k, v in cmd["peers"].items()})
        return {"ok": True}
    if op == "send":
        state = _model(cmd["mb"], cmd.get("seed", 1))
        try:
            verdict = await svc.send_update(bytes.fromhex(cmd["to"]), round=1, term=1, state=state)
        except SwarmError as exc:
            return {"ok": False, "error": f"{type(exc).__name__}: {exc}", "seconds": time.monotonic() - t0}
        return {"ok": verdict.ok, "reason": str(verdict.reason), "seconds": time.monotonic() - t0}
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
    _say(
        {
            "ready": True,
            "peer_id": svc.peer_id,
            "account": svc.account,
            "addrs": svc.addresses(),
            "model_hash": model_hash,
        }
    )
    loop = asyncio.get_running_loop()
    try:
        while line := await loop.run_in_executor(None, sys.stdin.readline):
            cmd = json.loads(line)
            if cmd.get("op") == "quit":
                break
            _say(await _command(svc, handler, cmd))
    finally:
        await svc.close()


if __name__ == "__main__":
    asyncio.run(main(json.loads(sys.argv[1])))
