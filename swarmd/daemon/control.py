"""The local control socket: a unix socket in the state dir answering one JSON request per line.

Only local users who can open the socket (mode 0600, the daemon's own user) can ask. Requests:
    {"cmd": "status"}   -> the daemon's current state, with `problems` (bad local state being
                           repaired: kind, detail, action, since) and the last few `repaired`
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

from swarmd.errors import DaemonError

log = logging.getLogger("swarmd.control")
MAX_REQUEST = 4096
# sun_path holds 108 bytes on Linux, the terminating NUL included.
MAX_SOCKET_PATH = 107


class ControlServer:
    def __init__(self, path: Path, status: Callable[[], dict[str, Any]]) -> None:
        self.path = path
        self._status = status
        self._server: asyncio.base_events.Server | None = None

    async def start(self) -> None:
        if len(os.fsencode(self.path)) > MAX_SOCKET_PATH:
            raise DaemonError(
                f"control socket path {self.path} is too long for a unix socket "
                f"({len(os.fsencode(self.path))} bytes, at most {MAX_SOCKET_PATH})",
                hint="give the site a shorter state directory ([site] state_dir in site.toml)",
            )
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._server = await asyncio.start_unix_server(self._serve, path=str(self.path), limit=MAX_REQUEST)
        os.chmod(self.path, 0o600)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), timeout=5)
            reply = self._answer(line)
        except (asyncio.TimeoutError, asyncio.LimitOverrunError, ValueError):
            reply = {"ok": False, "error": "bad request"}
        try:
            writer.write(json.dumps(reply, default=str).encode() + b"\n")
            await writer.drain()
        except ConnectionError:
            pass
        finally:
            writer.close()

    def _answer(self, line: bytes) -> dict[str, Any]:
        try:
            req = json.loads(line)
        except ValueError:
            return {"ok": False, "error": "request is not JSON"}
        if not isinstance(req, dict) or req.get("cmd") != "status":
            return {"ok": False, "error": "unknown command"}
        return {"ok": True, "status": self._status()}


def query_status(path: Path, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a running daemon for its status (used by `swarm status`)."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(str(path))
            s.sendall(b'{"cmd": "status"}\n')
            data = b""
            while not data.endswith(b"\n"):
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
    except FileNotFoundError:
        raise DaemonError(
            f"no daemon control socket at {path}", hint="is swarmd running for this site?"
        ) from None
    except OSError as exc:
        raise DaemonError(f"cannot reach the daemon at {path}: {exc.strerror or exc}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise DaemonError(f"the daemon at {path} sent a malformed reply") from None
    if not reply.get("ok"):
        raise DaemonError(f"the daemon refused: {reply.get('error')}")
    return reply["status"]
