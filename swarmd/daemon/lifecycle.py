"""Process lifecycle: JSON logging, signals (first = graceful, second = forced), bounded shutdown, and
the heap settled once start-up is done (`settle_heap`).

A stop is bounded as a whole: after the first signal the main loop has SAFE_POINT_TIMEOUT to reach a
safe point (it is cancelled, as by a second signal, if it has not), then shutdown has SHUTDOWN_TIMEOUT.
Together they stay within STOP_BUDGET, what `systemctl stop` and the docs promise.

Only `run()` is called by the CLI. It returns an exit status; it never calls sys.exit itself.
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import signal
import sys
import time
from typing import Any, Protocol

log = logging.getLogger("swarmd")
STOP_BUDGET = 10.0  # seconds from the first SIGTERM to the process's exit, whatever the daemon was doing
SAFE_POINT_TIMEOUT = 5.0  # for the main loop to stop at a safe point before it is cancelled
SHUTDOWN_TIMEOUT = 4.0  # for closing sockets, servers and threads (the rest is the interpreter's exit)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "ts": round(record.created, 3),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        extra = getattr(record, "fields", None)
        if isinstance(extra, dict):
            doc.update(extra)
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return json.dumps(doc, default=str)


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("web3", "urllib3", "asyncio", "ignite", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


class Service(Protocol):
    """What `serve` runs: `app.Daemon`, or any object with the same lifecycle."""

    async def startup(self) -> None: ...

    async def main_loop(self) -> None: ...

    def request_stop(self) -> None: ...

    async def shutdown(self) -> None: ...


def settle_heap() -> int:
    """Move what start-up left alive (torch, MONAI, the bundle, web3: millions of objects, nearly all kept
    for the process's life) out of the cyclic collector's reach, after one last full collection so that
    no garbage is kept with them; returns how many objects are frozen. Each full collection scanned them
    all, a pause of 0.3-0.9 s of the event loop and of every thread, in the middle of rounds (measured in
    `swarm bench wan`); now a full collection scans only what the rounds made."""
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def serve(daemon: Service) -> int:
    """Run startup, main loop and shutdown of `daemon`, wiring SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = {"count": 0}

    looping = {"main": False}  # only the main loop is cancelled: shutdown has its own bound

    def force(why: str) -> None:
        if main is not None and looping["main"]:
            log.warning("%s: forcing shutdown", why)
            main.cancel()

    def on_signal(sig: signal.Signals) -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            log.info("received %s: finishing at the next safe point", sig.name)
            daemon.request_stop()
            no_safe_point = f"no safe point within {SAFE_POINT_TIMEOUT:.0f}s of {sig.name}"
            loop.call_later(SAFE_POINT_TIMEOUT, force, no_safe_point)
        else:
            force(f"received {sig.name} again")

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    started = time.monotonic()
    try:
        looping["main"] = True
        await daemon.startup()
        await daemon.main_loop()
        return 0
    except asyncio.CancelledError:
        return 130
    finally:
        looping["main"] = False
        try:
            await asyncio.wait_for(daemon.shutdown(), timeout=SHUTDOWN_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            log.error("shutdown did not finish within %.0fs; abandoning what is left", SHUTDOWN_TIMEOUT)
        log.info("stopped after %.1fs", time.monotonic() - started)
