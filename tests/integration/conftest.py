"""Integration fixtures: transport nodes in child processes, a node on a background event loop,
and a raw ZeroMQ client that speaks (or mangles) the wire protocol with a member's CURVE key."""

from __future__ import annotations

import asyncio
import json
import os
import selectors
import socket
import subprocess
import sys
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import msgpack
import pytest
import zmq

from swarmd.transport import Limits, Node

sys.path.insert(0, str(Path(__file__).parent))
import contextlib

from peerproc import Recorder

T = TypeVar("T")
PEERPROC = Path(__file__).with_name("peerproc.py")


class PeerProc:
    """A transport node in a child process (tests/integration/peerproc.py), driven over pipes."""

    def __init__(self, *args: str) -> None:
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, str(PEERPROC), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        info = self._readline(60)
        self.endpoint: str = info["endpoint"]
        self.key: bytes = bytes.fromhex(info["public"])

    def _readline(self, timeout: float) -> dict[str, Any]:
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)  # type: ignore[arg-type]
        ready = sel.select(timeout)
        sel.close()
        if not ready:
            raise TimeoutError("peer process did not answer")
        line = self.proc.stdout.readline()  # type: ignore[union-attr]
        if not line:
            raise RuntimeError(f"peer process exited with {self.proc.wait()}")
        return json.loads(line)

    def call(self, op: str, timeout: float = 60, **kw: Any) -> dict[str, Any]:
        self.proc.stdin.write(json.dumps({"op": op, **kw}) + "\n")  # type: ignore[union-attr]
        self.proc.stdin.flush()  # type: ignore[union-attr]
        return self._readline(timeout)

    def set_peers(self, peers: dict[bytes, str]) -> None:
        self.call("peers", peers={k.hex(): v for k, v in peers.items()})

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(TimeoutError, RuntimeError, BrokenPipeError, json.JSONDecodeError):
                self.call("quit", timeout=0.1)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


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
        self.handler = Recorder()
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


class RawPeer:
    """A plain ZeroMQ DEALER that sends arbitrary frames: a member's key, but no protocol manners."""

    def __init__(
        self, endpoint: str, server_key: bytes | None, keypair: tuple[bytes, bytes] | None = None
    ) -> None:
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if server_key is not None:
            self.public, secret = keypair or zmq.curve_keypair()
            self.sock.curve_serverkey = server_key
            self.sock.curve_publickey = self.public
            self.sock.curve_secretkey = secret
        self.sock.connect(endpoint)

    @property
    def key(self) -> bytes:
        return zmq.utils.z85.decode(self.public)

    def send(self, header: dict[str, Any] | bytes, *data: bytes) -> None:
        frame = header if isinstance(header, bytes) else msgpack.packb(header, use_bin_type=True)
        self.sock.send_multipart([frame, *data])

    def recv(self, timeout: float = 5.0) -> dict[str, Any] | None:
        if not self.sock.poll(int(timeout * 1000)):
            return None
        frames = self.sock.recv_multipart()
        return msgpack.unpackb(frames[0])

    def close(self) -> None:
        self.ctx.destroy(linger=0)


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


FAST = Limits(
    stall_timeout=1.0, request_timeout=10.0, heartbeat_ivl=0.5, heartbeat_timeout=3.0, reconnect_ivl_max=0.5
)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
