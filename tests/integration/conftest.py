"""Integration fixtures: transport nodes in child processes, a node on a background event loop,
and a raw ZeroMQ client that speaks (or mangles) the wire protocol with a member's CURVE key."""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
import zmq

from swarmd.transport import Node

sys.path.insert(0, str(Path(__file__).parent))

from harness import PeerProc, RawPeer
from peerproc import Recorder

T = TypeVar("T")


@pytest.fixture
def spawn_peer() -> Iterator[Any]:
    procs: list[PeerProc] = []

    def spawn(*args: str) -> PeerProc:
        p = PeerProc(*args)
        procs.append(p)
        return p

    yield spawn
    for p in procs:
        p.close()


class LoopNode:
    """A Node running on its own event loop in a background thread, driven from sync test code."""

    def __init__(self, **kw: Any) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        pub, sec = zmq.curve_keypair()
        self.public, self.secret = pub, sec
        self.handler = kw.pop("handler", None) or Recorder()
        kw.setdefault("max_bytes", 1 << 30)
        self.node = self.run(self._make(pub, sec, kw))

    async def _make(self, pub: bytes, sec: bytes, kw: dict[str, Any]) -> Node:
        node = Node(self.handler, bind="tcp://127.0.0.1:*", public_key=pub, secret_key=sec, **kw)
        await node.start()
        return node

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def set_peers(self, peers: dict[bytes, str]) -> None:
        async def apply() -> None:
            self.node.set_peers(peers)

        self.run(apply())  # wait until applied, so no later message can race ahead of it

    def close(self) -> None:
        self.run(self.node.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@pytest.fixture
def loop_node() -> Iterator[Any]:
    nodes: list[LoopNode] = []

    def make(**kw: Any) -> LoopNode:
        n = LoopNode(**kw)
        nodes.append(n)
        return n

    yield make
    for n in nodes:
        n.close()


@pytest.fixture
def raw_peer() -> Iterator[Any]:
    peers: list[RawPeer] = []

    def make(*args: Any) -> RawPeer:
        p = RawPeer(*args)
        peers.append(p)
        return p

    yield make
    for p in peers:
        p.close()
