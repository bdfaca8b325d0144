"""Running site daemons as local processes (devnet, demo, end-to-end tests, round benchmark).

A daemon is `swarmd run` in a fresh interpreter (`subprocess`), or, with `fork=True`, a child of a
multiprocessing forkserver that has already imported what every daemon imports before its first round
(torch, MONAI's bundle and FL client, web3 and eth-account, and torch's dynamo, which the first
optimizer pulls in): about 7 CPU-seconds a start on this project's machines, which three or eight
daemons starting at once on two cores pay over again. A forked daemon is still its own process (its
own pid, signals, sockets, exit code) running the same `swarmd run` command, with the environment,
log and malloc setting a fresh one would have. multiprocessing joins a process's children when it
exits, so a swarm that must outlive this process (`keep`) uses subprocesses; and, as in any
multiprocessing child, the program's main module is imported again in each daemon, so it must import
without side effects (the `swarm` entry point and pytest's do).
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.process
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TypeVar

from swarmd.config import load_config
from swarmd.daemon.control import query_status
from swarmd.errors import DaemonError

T = TypeVar("T")

# What a daemon imports before its first round; a forkserver imports them once (see the docstring).
PRELOAD = (
    "swarmd.cli.swarmd",
    "swarmd.daemon.app",
    "swarmd.daemon.lifecycle",
    "swarmd.train.trainer",
    "monai.bundle",
    "monai.fl.client.monai_algo",
    "monai.networks.nets",
    "ignite.engine",
    "torch._dynamo",
)
MMAP_THRESHOLD = 16 << 20  # without it glibc keeps freed multi-MB payloads resident (docs/transport.md)


class Proc(Protocol):
    """What the launcher and the tests use of a daemon's process: subprocess.Popen, or ForkedDaemon."""

    @property
    def pid(self) -> int: ...
    @property
    def returncode(self) -> int | None: ...
    def poll(self) -> int | None: ...
    def wait(self, timeout: float | None = None) -> int: ...
    def send_signal(self, sig: int) -> None: ...
    def kill(self) -> None: ...


class ForkedDaemon:
    """A daemon forked by the forkserver, behind the part of subprocess.Popen's interface `Proc` names."""

    def __init__(self, process: multiprocessing.process.BaseProcess) -> None:
        self._process = process

    @property
    def pid(self) -> int:
        assert self._process.pid is not None  # set by start()
        return self._process.pid

    @property
    def returncode(self) -> int | None:
        return self._process.exitcode

    def poll(self) -> int | None:
        return self._process.exitcode

    def wait(self, timeout: float | None = None) -> int:
        self._process.join(timeout)
        code = self._process.exitcode
        if code is None:
            raise subprocess.TimeoutExpired(f"swarmd run (forked, pid {self.pid})", timeout or 0.0)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:  # once reaped, its pid may be another process's
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


def start_forkserver() -> None:
    """Start the forkserver (if it is not running), so its imports overlap what comes before the first
    daemon starts; idempotent."""
    multiprocessing.set_forkserver_preload(list(PRELOAD))
    multiprocessing.forkserver.ensure_running()


def _fork_daemon(config: Path, log: Path, env: dict[str, str]) -> ForkedDaemon:
    start_forkserver()
    ctx = multiprocessing.get_context("forkserver")
    process = ctx.Process(target=_forked_main, args=(str(config), str(log), env), name=f"swarmd {config}")
    process.start()
    return ForkedDaemon(process)


def _forked_main(config: str, log: str, env: dict[str, str]) -> None:
    """A forked daemon's first steps: what Popen and a fresh interpreter would have set up (its environment,
    stdout and stderr in its log, glibc's mmap threshold), then `swarmd run --config CONFIG`."""
    os.environ.clear()
    os.environ.update(env)
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.dup2(fd, 1)
    os.dup2(fd, 2)
    os.close(fd)
    for stream in (sys.stdout, sys.stderr):  # PYTHONUNBUFFERED came too late for these
        stream.reconfigure(line_buffering=True)  # type: ignore[union-attr]
    with contextlib.suppress(OSError, AttributeError):  # glibc only
        ctypes.CDLL("libc.so.6").mallopt(-3, MMAP_THRESHOLD)  # M_MMAP_THRESHOLD = -3
    from swarmd.cli.swarmd import app

    app(["run", "--config", config], prog_name="swarmd")


@dataclass
class DaemonProcess:
    """One `swarmd run` process of this process, logging to `log`: a subprocess, or with `fork`, a child of
    the forkserver (not with `wrap`, which needs a command line)."""

    name: str
    config: Path
    log: Path
    # A command prefix the daemon runs under, e.g. `ip netns exec NS` (it execs: the pid stays the daemon's).
    wrap: tuple[str, ...] = ()
    fork: bool = False
    proc: Proc | None = field(default=None, repr=False)
    _terminating: bool = field(default=False, repr=False)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc else None

    def start(self, env: dict[str, str] | None = None) -> DaemonProcess:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        cmd = [*self.wrap, sys.executable, "-m", "swarmd.cli.swarmd", "run", "--config", str(self.config)]
        full_env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PYTHONUNBUFFERED": "1",
            "MALLOC_MMAP_THRESHOLD_": str(MMAP_THRESHOLD),
            **(env or {}),
        }
        if self.fork and not self.wrap:
            self.proc = _fork_daemon(self.config, self.log, full_env)
        else:
            with open(self.log, "ab") as log:
                self.proc = subprocess.Popen(
                    cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=full_env
                )
        self._terminating = False
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def status(self) -> dict[str, Any] | None:
        """The daemon's control-socket status, or None while it is not answering."""
        try:
            # 5 s: a daemon training on a loaded box can take seconds to answer (None: not answering)
            return query_status(load_config(self.config).control_socket, timeout=5.0)
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
