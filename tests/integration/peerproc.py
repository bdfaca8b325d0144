"""A transport node in its own OS process, driven by JSON lines on stdin, for integration tests.

    python tests/integration/peerproc.py [--bulk aead|curve] [--max-bytes N] [--stall S] [--max-streams N]
        [--max-serves N] [--max-tensors N]

On start it prints one JSON line: {"endpoint", "public" (hex raw key), "bulk_port"}. Then each
stdin line is a command {"op": ..., ...} answered by one JSON line on stdout (see COMMANDS).
The handler accepts every update, answers with the content hash it recomputes from the decoded
tensors (so the sender can check bit-exactness), and serves every model it received, by its content
hash and by its v1 hash.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
from dataclasses import asdict
from typing import Any

import torch
import zmq

from swarmd import codec
from swarmd.codec import Manifest
from swarmd.errors import SwarmError
from swarmd.transport import (
    AnnounceHeader,
    Limits,
    Node,
    PeerId,
    Refusal,
    SecAggHeader,
    UpdateHeader,
    Verdict,
)


def densenet_like_state(n_params: int, seed: int) -> dict[str, torch.Tensor]:
    """A state dict shaped like a CNN's: many conv/bn tensors, a few big ones, int64 counters."""
    g = torch.Generator().manual_seed(seed)
    state: dict[str, torch.Tensor] = {}
    left, i = n_params, 0
    while left > 0:
        n = min(left, [64 * 3 * 7 * 7, 128 * 64, 32 * 128 * 9, 1_000_000][i % 4])
        state[f"features.block{i:04d}.conv.weight"] = torch.randn(n, generator=g)
        state[f"features.block{i:04d}.norm.num_batches_tracked"] = torch.tensor(i, dtype=torch.int64)
        left -= n
        i += 1
    return state


class Recorder:
    def __init__(self) -> None:
        self.models: dict[bytes, tuple[Manifest, list[memoryview]]] = {}
        self.updates = 0
        self.max_streams_in = 0  # the most inbound streams seen open at once (sampled)
        self.announces: list[AnnounceHeader] = []
        self.corrupt_serving = False
        self.receipt: bytes | None = None  # what on_update hands back with its acceptance

    async def on_update(
        self, peer: PeerId, header: UpdateHeader, state: dict[str, torch.Tensor], digest: bytes
    ) -> Verdict:
        self.updates += 1
        self.models[digest] = codec.encode(state)
        # and by the v1 hash, as a store written before protocol 4 names it
        self.models[codec.content_hash(state, legacy=True)] = self.models[digest]
        return Verdict(True, detail=codec.hash_hex(codec.content_hash(state)), receipt=self.receipt)

    async def on_announce(self, peer: PeerId, header: AnnounceHeader) -> None:
        self.announces.append(header)

    async def on_secagg(self, peer: PeerId, header: SecAggHeader, body: bytes) -> bytes | Verdict:
        # this test peer answers with the body reversed, and refuses a body that starts with b"no"
        if body.startswith(b"no"):
            return Verdict(False, Refusal.PRIVACY_REFUSED, "asked for too much")
        return f"{header.round}:{header.topic.value}:".encode() + body[::-1]

    def check_offer(self, peer: PeerId, header: UpdateHeader) -> Verdict:
        # the early check: this test peer refuses updates for round 0 as stale
        if header.round == 0:
            return Verdict(False, Refusal.NOT_READY, "stale round")
        return Verdict(True)

    def serve_model(self, model_hash: bytes) -> tuple[Manifest, list[memoryview]] | None:
        payload = self.models.get(model_hash)
        if payload is None or not self.corrupt_serving:
            return payload
        manifest, frames = payload
        bad = [bytearray(f) for f in frames]
        bad[len(bad) // 2][0] ^= 0xFF
        return manifest, [memoryview(b) for b in bad]


async def _run(node: Node, rec: Recorder, op: str, cmd: dict[str, Any]) -> dict[str, Any]:
    peer: PeerId = bytes.fromhex(cmd.get("peer", ""))
    if op == "peers":
        node.set_peers({bytes.fromhex(k): v for k, v in cmd["peers"].items()})
        return {}
    if op == "update":
        state = densenet_like_state(cmd["n_params"], cmd.get("seed", 0))
        sent = codec.content_hash(state)
        verdict = await node.send_update(peer, round=cmd.get("round", 1), term=0, state=state, timeout=60)
        return {"sent": codec.hash_hex(sent), "verdict": asdict(verdict)}
    if op == "fetch":
        got = await node.fetch_model(peer, codec.parse_hash(cmd["hash"]), max_bytes=cmd["max_bytes"])
        return {"hash": codec.hash_hex(codec.content_hash(got))}
    if op == "ping":
        return {"rtt": await node.ping(peer, timeout=cmd.get("timeout", 5))}
    if op == "corrupt_serving":
        rec.corrupt_serving = True
        return {}
    if op == "stats":
        s = node.stats
        return {
            "updates": rec.updates,
            "announces": [[a.round, a.model_hash.hex()] for a in rec.announces],
            "rejections": dict(s.rejections),
            "denied": s.handshakes_denied,
            "streams_out": len(node._flows.outbound),  # uploads and serves still pumping
            "streams_in": len(node._flows.inbound),  # updates and models still arriving
            "max_streams_in": rec.max_streams_in,
        }
    raise ValueError(f"unknown op {op}")


async def _watch_streams(node: Node, rec: Recorder) -> None:
    while True:
        rec.max_streams_in = max(rec.max_streams_in, len(node._flows.inbound))
        await asyncio.sleep(0.005)


async def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--bulk", default="aead")
    ap.add_argument("--max-bytes", type=int, default=1 << 30)
    ap.add_argument("--stall", type=float, default=10.0)
    ap.add_argument("--max-streams", type=int, default=Limits.max_streams)
    ap.add_argument("--max-serves", type=int, default=Limits.max_serves)
    ap.add_argument("--max-tensors", type=int, default=Limits.max_tensors)
    ap.add_argument("--peer-messages", type=float, default=Limits.peer_messages)
    ap.add_argument("--bind", default="tcp://127.0.0.1:*")
    ap.add_argument("--bulk-bind", default=None)
    ap.add_argument("--keys", default=None, help="public,secret in z85, to restart with the same identity")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    pub, sec = args.keys.encode().split(b",") if args.keys else zmq.curve_keypair()
    rec = Recorder()
    limits = Limits(
        stall_timeout=args.stall,
        request_timeout=30,
        max_streams=args.max_streams,
        max_serves=args.max_serves,
        max_tensors=args.max_tensors,
        peer_messages=args.peer_messages,
    )
    node = Node(
        rec,
        bind=args.bind,
        bulk_bind=args.bulk_bind,
        public_key=pub,
        secret_key=sec,
        max_bytes=args.max_bytes,
        limits=limits,
        bulk=args.bulk,
    )
    await node.start()
    print(
        json.dumps({"endpoint": node.endpoint, "public": node.peer_id.hex(), "bulk_port": node.bulk_port}),
        flush=True,
    )
    loop = asyncio.get_running_loop()
    watch = asyncio.ensure_future(_watch_streams(node, rec))
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        cmd = json.loads(line)
        op = cmd.pop("op")
        if op == "quit":
            break
        try:
            out = {"ok": True, **await _run(node, rec, op, cmd)}
        except SwarmError as exc:
            out = {"ok": False, "error": type(exc).__name__, "message": str(exc)}
        print(json.dumps(out), flush=True)
    watch.cancel()
    await node.close()


if __name__ == "__main__":
    asyncio.run(main())
