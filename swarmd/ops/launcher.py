"""Running site daemons as local subprocesses (devnet, demo, end-to-end tests, round benchmark)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from swarmd.config import load_config
from swarmd.daemon.control import query_status
from swarmd.errors import DaemonError

T = TypeVar("T")


@dataclass
class DaemonProcess:
    """One `swarmd run` subprocess of this process, logging to `log`."""

    name: str
    config: Path
    log: Path
    # A command prefix the daemon runs under, e.g. `ip netns exec NS` (it execs: the pid stays the daemon's).
    wrap: tuple[str, ...] = ()
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _terminating: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, env: dict[str, str] | None = None) -> DaemonProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [*self.wrap, sys.executable, "-m", "swarmd.cli.swarmd", "run", "--config", str(self.config)]
        # Without the mmap threshold glibc keeps freed multi-MB payloads resident (docs/transport.md).
        full_env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "MALLOC_MMAP_THRESHOLD_": "16777216",
            **(env or {}),
        }
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=full_env)
        self._terminating = False
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, Any] | None:
        """The daemon's control-socket status, or None while it is not answering."""
        try:
            return query_status(load_config(self.config).control_socket, timeout=2.0)
        except DaemonError:
            return None

    def kill(self) -> None:
        """SIGKILL: the crash case the fault tests need."""
        if self.alive() and self.proc is not None:
            self.proc.kill()
            self.proc.wait()

    def terminate(self) -> None:
        """SIGTERM, once: the daemon begins its graceful exit."""
        if self.alive() and self.proc is not None and not self._terminating:
            self.proc.send_signal(signal.SIGTERM)
            self._terminating = True

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, wait for the graceful exit, SIGKILL after `timeout`."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode

    def tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


def stop_all(daemons: list[DaemonProcess], timeout: float = 30.0) -> list[int | None]:
    """Stop several daemons in parallel: SIGTERM to all, then wait for each (SIGKILL after `timeout`)."""
    for d in daemons:
        d.terminate()
    return [d.stop(timeout) for d in daemons]


def wait_until(
    predicate: Callable[[], T], timeout: float, interval: float = 0.5, what: str = "condition"
) -> T:
    """Poll `predicate()` until it returns something truthy; DaemonError after `timeout` seconds."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise DaemonError(f"timed out after {timeout:.0f}s waiting for {what}")
