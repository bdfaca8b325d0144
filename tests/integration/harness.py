"""Drivers for integration and fault tests: a transport node in a child process (peerproc.py), and a
raw ZeroMQ client that speaks (or mangles) the wire protocol, with a member's CURVE key or none."""

from __future__ import annotations

import contextlib
import json
import os
import selectors
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import msgpack
import zmq

from swarmd.transport import Limits

PEERPROC = Path(__file__).with_name("peerproc.py")
# Short timeouts for tests that drive a node in the test process. In this module, not in conftest.py: a
# test module's `from conftest import` gets whichever conftest pytest imported last.
FAST = Limits(
    stall_timeout=1.0, request_timeout=10.0, heartbeat_ivl=0.5, heartbeat_timeout=3.0, reconnect_ivl_max=0.5
)


class PeerProc:
    """A transport node in a child process (tests/integration/peerproc.py), driven over pipes."""

    def __init__(self, *args: str, wrap: Sequence[str] = ()) -> None:
        """`wrap`: a command prefix, e.g. `ip netns exec NS` to run the peer in a network namespace."""
        env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [*wrap, sys.executable, str(PEERPROC), *args],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            env=env,
        )
        info = self._readline(60)
        self.endpoint: str = info["endpoint"]
        self.key: bytes = bytes.fromhex(info["public"])
        self.bulk_port: int | None = info["bulk_port"]

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


class RawPeer:
    """A plain ZeroMQ DEALER that sends arbitrary frames: a member's key, but no protocol manners."""

    def __init__(
        self,
        endpoint: str,
        server_key: bytes | None,
        keypair: tuple[bytes, bytes] | None = None,
        login: tuple[bytes, bytes] | None = None,
    ) -> None:
        """`server_key`: CURVE to a control port; `login`: (member id, token) for a bulk port."""
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.linger = 0
        if login is not None:
            self.sock.plain_username = login[0].hex().encode()
            self.sock.plain_password = login[1].hex().encode()
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
