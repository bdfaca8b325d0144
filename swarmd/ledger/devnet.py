"""The local devnet: an anvil process on 127.0.0.1, from the pinned npm package in contracts/node_modules.

`Devnet.start()` launches anvil (instant blocks, or `block_time` seconds per block), waits until its
JSON-RPC answers, and reads the funded dev keys anvil derives from its default mnemonic. With
`detach=True` anvil outlives the Python process (own session, output to a log file); `save()` writes
its URL, pid and keys to a state file and `Devnet.load()` / `Devnet.attach()` take it over again, which
is how `swarm devnet up` and `swarm devnet down` work across CLI invocations.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import random
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import requests

from swarmd.errors import DevnetError
from swarmd.fsutil import atomic_write_text

ANVIL_ENV = "SWARMD_ANVIL"
PORT_FLOOR = 20000  # free_ports draws from here up to the kernel's ephemeral range
_READY_TIMEOUT_S = 20.0
_STOP_TIMEOUT_S = 10.0
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


def _repo_contracts_dir() -> Path:
    # swarmd/ledger/devnet.py -> repository root is two levels above the package directory.
    return Path(__file__).resolve().parents[2] / "contracts"


def find_anvil() -> Path:
    """Path of the anvil binary: $SWARMD_ANVIL, else the one npm installed in contracts/node_modules,
    else an `anvil` on PATH."""
    override = os.environ.get(ANVIL_ENV)
    if override:
        path = Path(override)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise DevnetError(f"{ANVIL_ENV}={override} is not an executable file")
        return path
    system = platform.system().lower()
    arch = _ARCH.get(platform.machine().lower(), platform.machine().lower())
    pkg = _repo_contracts_dir() / "node_modules" / "@foundry-rs" / f"anvil-{system}-{arch}" / "bin" / "anvil"
    if pkg.is_file():
        return pkg
    on_path = shutil.which("anvil")  # a Foundry install, for a swarmd installed without the repository
    if on_path:
        return Path(on_path)
    raise DevnetError(
        f"anvil not found at {pkg}",
        hint=(
            f"run scripts/bootstrap (npm ci in contracts/; the pinned binary is for linux-amd64), or install "
            f"Foundry's anvil 1.7.1 on PATH, or point {ANVIL_ENV} at an anvil binary"
        ),
    )


def free_port() -> int:
    """A TCP port that was free a moment ago on 127.0.0.1 (anvil binds it right after)."""
    return free_ports(1)[0]


def free_ports(n: int, width: int = 1) -> list[int]:
    """n ports p on 127.0.0.1, each free a moment ago with p + 1 .. p + width - 1 (a daemon's bulk and
    metrics ports), drawn at random below the kernel's ephemeral range when there is room. A port the
    kernel hands out (bind to 0) and this releases is one it may hand next to any process's outgoing
    connection as its source port, before the server meant for it binds: a loaded test run lost a
    daemon's metrics port that way. Ports below the range are never given to outgoing connections."""
    low, rng = _ephemeral_low(), random.SystemRandom()
    held: list[socket.socket] = []
    out: list[int] = []
    try:
        for _ in range(100 * n):
            base = rng.randrange(PORT_FLOOR, low - width) if low - width > PORT_FLOOR else _kernel_port()
            block = _bind_block(base, width)
            if block:
                held += block
                out.append(base)
                if len(out) == n:
                    return out
        raise DevnetError(f"found no {n} blocks of {width} free ports on 127.0.0.1")
    finally:
        for sock in held:
            sock.close()


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _kernel_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _bind_block(base: int, width: int) -> list[socket.socket]:
    """Sockets bound to base .. base + width - 1, held; empty (none held) when one is taken."""
    socks: list[socket.socket] = []
    try:
        for port in range(base, base + width):
            socks.append(socket.socket())
            socks[-1].bind(("127.0.0.1", port))
    except OSError:
        for sock in socks:
            sock.close()
        return []
    return socks


def rpc_call(url: str, method: str, params: Sequence[Any] = (), timeout: float = 5.0) -> Any:
    """One raw JSON-RPC call; used for anvil_* and evm_* methods web3 does not wrap."""
    try:
        resp = requests.post(
            url, json={"jsonrpc": "2.0", "id": 1, "method": method, "params": list(params)}, timeout=timeout
        )
        body = resp.json()
    except (requests.RequestException, ValueError) as exc:
        raise DevnetError(f"devnet RPC {url} did not answer {method}: {exc}") from exc
    if "error" in body:
        raise DevnetError(f"devnet RPC {method} failed: {body['error'].get('message', body['error'])}")
    return body.get("result")


def _pid_is_anvil(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    first = cmdline.split(b"\0", 1)[0]
    return b"anvil" in first.rsplit(b"/", 1)[-1]  # also "anvil-1.7" and the like via SWARMD_ANVIL


def anvil_ws_url(rpc_url: str) -> str:
    """anvil answers websockets on its JSON-RPC port: the `chain.ws_url` of a site on a devnet."""
    return "ws" + rpc_url.removeprefix("http") if rpc_url.startswith("http") else rpc_url


@dataclass
class Devnet:
    """A running anvil. Owns the process when it started it (or was attached to a pid)."""

    rpc_url: str
    dev_keys: tuple[str, ...]
    pid: int | None = None
    chain_id: int = 31337
    block_time: float | None = None
    state_file: Path | None = None
    log_file: Path | None = None
    _proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    _workdir: Path | None = field(default=None, repr=False)  # our temp dir, removed on stop

    # ------------------------------------------------------------------ start / attach
    @classmethod
    def start(
        cls,
        *,
        port: int | None = None,
        block_time: float | None = None,
        accounts: int = 20,
        state_file: Path | None = None,
        detach: bool = False,
        log_file: Path | None = None,
        chain_id: int = 31337,
        state_interval: float | None = None,
    ) -> Devnet:
        """Start anvil on 127.0.0.1 and wait until its RPC answers.

        `state_file`: anvil loads it when it exists and dumps its state there on a clean stop, so a
        devnet can be restarted with its chain intact; `state_interval` also dumps it every so many
        seconds, so a killed anvil loses little. `detach`: anvil runs in its own session and keeps
        running after this process exits; stop it later with `Devnet.load(...).stop()`.
        """
        if accounts < 1:
            raise DevnetError("a devnet needs at least one account")
        anvil = find_anvil()
        if port is None:
            port = free_port()
        elif not _port_free(port):
            # Checked first: otherwise the readiness probe would be answered by whoever holds the port.
            raise DevnetError(
                f"port {port} on 127.0.0.1 is already in use", hint="stop that process or pick another port"
            )
        workdir = Path(tempfile.mkdtemp(prefix="swarmd-devnet-"))
        config_out = workdir / "anvil-config.json"
        args = [
            str(anvil),
            "--host", "127.0.0.1",
            "--port", str(port),
            "--accounts", str(accounts),
            "--chain-id", str(chain_id),
            "--config-out", str(config_out),
        ]  # fmt: skip
        if block_time is not None:
            if block_time <= 0:
                raise DevnetError(f"block_time must be positive, got {block_time}")
            args += ["--block-time", _fmt_seconds(block_time)]
        if state_file is not None:
            state_file = Path(state_file)
            state_file.parent.mkdir(parents=True, exist_ok=True)
            if state_file.exists():
                args += ["--load-state", str(state_file)]
            args += ["--dump-state", str(state_file)]
            if state_interval is not None:
                args += ["--state-interval", _fmt_seconds(max(1.0, state_interval))]
        log_path = Path(log_file) if log_file else workdir / "anvil.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(log_path, "ab") as log:
            try:
                proc = subprocess.Popen(
                    args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    start_new_session=detach,
                )  # fmt: skip
            except OSError as exc:
                raise DevnetError(f"cannot start anvil ({anvil}): {exc}") from exc
        url = f"http://127.0.0.1:{port}"
        try:
            _wait_ready(url, proc, log_path)
            keys = _read_keys(config_out, proc, log_path)
        except BaseException:
            _terminate(proc.pid, proc)
            shutil.rmtree(workdir, ignore_errors=True)
            raise
        config_out.unlink(missing_ok=True)
        return cls(
            rpc_url=url,
            dev_keys=keys,
            pid=proc.pid,
            chain_id=chain_id,
            block_time=block_time,
            state_file=state_file,
            log_file=log_path,
            _proc=proc,
            # A detached anvil keeps writing its log into workdir, so only an attached one cleans it up.
            _workdir=None if detach else workdir,
        )

    @classmethod
    def attach(cls, rpc_url: str, pid: int | None = None, dev_keys: Sequence[str] = ()) -> Devnet:
        """Take over a devnet started elsewhere (e.g. by `swarm devnet up`); checks that its RPC answers."""
        chain_id = int(rpc_call(rpc_url, "eth_chainId"), 16)
        return cls(rpc_url=rpc_url, dev_keys=tuple(dev_keys), pid=pid, chain_id=chain_id)

    def save(self, path: Path) -> Path:
        """Record URL, pid and dev keys (public anvil test keys, still written 0600) for a later `load`."""
        doc = {
            "rpc_url": self.rpc_url,
            "pid": self.pid,
            "chain_id": self.chain_id,
            "block_time": self.block_time,
            "state_file": str(self.state_file) if self.state_file else None,
            "log_file": str(self.log_file) if self.log_file else None,
            "dev_keys": list(self.dev_keys),
        }
        return atomic_write_text(path, json.dumps(doc, indent=2) + "\n", mode=0o600)

    @classmethod
    def load(cls, path: Path) -> Devnet:
        """The devnet recorded by `save`; DevnetError when the file is missing or malformed."""
        try:
            doc = json.loads(Path(path).read_text())
            return cls(
                rpc_url=str(doc["rpc_url"]),
                dev_keys=tuple(str(k) for k in doc.get("dev_keys", [])),
                pid=int(doc["pid"]) if doc.get("pid") is not None else None,
                chain_id=int(doc.get("chain_id", 31337)),
                block_time=doc.get("block_time"),
                state_file=Path(doc["state_file"]) if doc.get("state_file") else None,
                log_file=Path(doc["log_file"]) if doc.get("log_file") else None,
            )
        except FileNotFoundError as exc:
            raise DevnetError(f"no devnet state at {path}", hint="start one with `swarm devnet up`") from exc
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DevnetError(f"devnet state {path} is unreadable: {exc}") from exc

    # ------------------------------------------------------------------ use
    def is_running(self) -> bool:
        try:
            # a refused connection answers at once; the timeout only waits on a node that is up but busy
            rpc_call(self.rpc_url, "eth_chainId", timeout=5.0)
        except DevnetError:
            return False
        return True

    def fund(self, address: str, ether: float = 100) -> None:
        """Set `address`'s balance to `ether` (anvil_setBalance: instant, no transaction)."""
        rpc_call(self.rpc_url, "anvil_setBalance", [address, hex(int(ether * 10**18))])

    @contextlib.contextmanager
    def mining_instantly(self) -> Iterator[None]:
        """Mine every transaction at once inside the block, then go back to `block_time` blocks.

        Provisioning is a chain of dependent transactions (deploy, joins, admissions): on 1 s blocks
        each waits a block for nothing. anvil switches modes only to whole seconds, so a fractional
        block time keeps its blocks throughout."""
        seconds = self.block_time
        if seconds is None or seconds != int(seconds):
            yield
            return
        rpc_call(self.rpc_url, "evm_setAutomine", [True])
        try:
            yield
        finally:
            rpc_call(self.rpc_url, "evm_setIntervalMining", [int(seconds)])

    def mine(self, blocks: int = 1) -> None:
        """Mine `blocks` empty blocks now (anvil_mine)."""
        rpc_call(self.rpc_url, "anvil_mine", [hex(blocks)])

    def snapshot(self) -> str:
        return str(rpc_call(self.rpc_url, "evm_snapshot"))

    def revert(self, snapshot_id: str) -> bool:
        return bool(rpc_call(self.rpc_url, "evm_revert", [snapshot_id]))

    def stop(self) -> None:
        """Stop anvil (SIGTERM, so it dumps `state_file`; SIGKILL after a timeout). Idempotent."""
        if self.pid is None:
            return
        if self._proc is None and not _pid_is_anvil(self.pid):
            # The recorded pid is gone or now belongs to another program: never signal it.
            self.pid = None
            return
        _terminate(self.pid, self._proc)
        self.pid = None
        self._proc = None
        if self._workdir is not None:
            shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None

    def __enter__(self) -> Devnet:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()


def _fmt_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as anvil sets it: connections in TIME_WAIT do not count, a listener does.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _check_alive(proc: subprocess.Popen[bytes], log_path: Path) -> None:
    if proc.poll() is not None:
        tail = log_path.read_text(errors="replace")[-600:] if log_path.exists() else ""
        raise DevnetError(f"anvil exited with status {proc.returncode}: {tail.strip()}")


def _wait_ready(url: str, proc: subprocess.Popen[bytes], log_path: Path) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while time.monotonic() < deadline:
        _check_alive(proc, log_path)
        with contextlib.suppress(DevnetError):
            rpc_call(url, "eth_chainId", timeout=0.5)
            return
        time.sleep(0.05)
    raise DevnetError(f"anvil did not answer on {url} within {_READY_TIMEOUT_S:.0f} s")


def _read_keys(config_out: Path, proc: subprocess.Popen[bytes], log_path: Path) -> tuple[str, ...]:
    # anvil writes --config-out right after binding; give it a moment on a loaded machine.
    for _ in range(100):
        _check_alive(proc, log_path)
        try:
            doc = json.loads(config_out.read_text())
            return tuple(str(k) for k in doc["private_keys"])
        except (OSError, ValueError, KeyError):
            time.sleep(0.02)
    raise DevnetError(f"anvil wrote no readable account list to {config_out}")


def _terminate(pid: int, proc: subprocess.Popen[bytes] | None) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + _STOP_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc is not None:
            if proc.poll() is not None:
                return
        elif not _pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if proc is not None:
        proc.wait(timeout=5)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A detached anvil that exited but was not reaped by its parent is a zombie: treat it as gone.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"
