"""Process lifecycle: JSON logging, signals (first = graceful, second = forced), bounded shutdown.

Only `run()` is called by the CLI. It returns an exit status; it never calls sys.exit itself.
"""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
import time
from typing import Any, Protocol

log = logging.getLogger("swarmd")
SHUTDOWN_TIMEOUT = 20.0


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


async def serve(daemon: Service) -> int:
    """Run startup, main loop and shutdown of `daemon`, wiring SIGTERM/SIGINT."""
    loop = asyncio.get_running_loop()
    main = asyncio.current_task()
    signals = {"count": 0}

    def on_signal(sig: signal.Signals) -> None:
        signals["count"] += 1
        if signals["count"] == 1:
            log.info("received %s: finishing at the next safe point", sig.name)
            daemon.request_stop()
        else:
            log.warning("received %s again: forcing shutdown", sig.name)
            if main is not None:
                main.cancel()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig)
    started = time.monotonic()
    try:
        await daemon.startup()
        await daemon.main_loop()
        return 0
    except asyncio.CancelledError:
        return 130
    finally:
        try:
            await asyncio.wait_for(daemon.shutdown(), timeout=SHUTDOWN_TIMEOUT)
        except (asyncio.TimeoutError, asyncio.CancelledError):
            log.error("shutdown did not finish within %.0fs; abandoning what is left", SHUTDOWN_TIMEOUT)
        log.info("stopped after %.1fs", time.monotonic() - started)
