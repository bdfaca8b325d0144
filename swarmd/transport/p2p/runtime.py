"""The trio runtime that py-libp2p needs, in its own thread, and the typed bridge to the daemon's loop.

py-libp2p runs on trio; the daemon runs on asyncio. `TrioThread` runs one `trio.run` in a daemon
thread whose root nursery hosts every libp2p task. The bridge has two calls:
- `await thread.call(fn, *args)` from asyncio: runs `await fn(*args)` as a trio task and hands back
  its result or exception; cancelling the asyncio awaiter cancels the trio task.
- `await to_asyncio(loop, coro)` from trio: runs a coroutine on the daemon's loop (the handler's
  calls), cancelling it when the trio side is cancelled.
`close(timeout)` cancels the root nursery and joins the thread within `timeout` (the daemon's SIGTERM
budget); a thread that does not end by then is left behind as a daemon thread and reported.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import trio

from swarmd.errors import TransportError

log = logging.getLogger("swarmd.transport.p2p")

T = TypeVar("T")


class RuntimeClosed(TransportError):
    """The libp2p runtime is not running (not started, closed, or its thread ended)."""


class TrioThread:
    """One trio event loop in its own thread; `start` returns once it accepts calls."""

    def __init__(self, name: str = "swarmd-p2p") -> None:
        self._name = name
        self._thread: threading.Thread | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._nursery: trio.Nursery | None = None
        self._ready = threading.Event()
        self._failure: BaseException | None = None

    @property
    def running(self) -> bool:
        return self._nursery is not None and self._thread is not None and self._thread.is_alive()

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
        self._thread.start()
        if not self._ready.wait(timeout) or self._nursery is None:
            raise RuntimeClosed(f"the libp2p runtime did not start: {self._failure!r}")

    def _main(self) -> None:
        async def root() -> None:
            self._token = trio.lowlevel.current_trio_token()
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._ready.set()
                await trio.sleep_forever()

        try:
            trio.run(root)
        except BaseException as exc:
            self._failure = exc
            log.exception("the libp2p runtime ended with an error")
        finally:
            self._nursery = None
            self._ready.set()

    def _post(self, fn: Callable[[], object]) -> None:
        token = self._token
        if token is None or not self.running:
            raise RuntimeClosed("the libp2p runtime is not running")
        try:
            token.run_sync_soon(fn)
        except trio.RunFinishedError:
            raise RuntimeClosed("the libp2p runtime has stopped") from None

    def submit(self, fn: Callable[..., Awaitable[T]], *args: Any) -> tuple[cf.Future[T], trio.CancelScope]:
        """Start `fn(*args)` in the trio thread from any thread: its future, and the scope that cancels it."""
        fut: cf.Future[T] = cf.Future()
        scope = trio.CancelScope()

        async def run() -> None:
            with scope:
                try:
                    result = await fn(*args)
                except BaseException as exc:
                    if not fut.done():
                        fut.set_exception(exc if isinstance(exc, Exception) else RuntimeClosed(repr(exc)))
                    if not isinstance(exc, Exception):
                        raise
                    return
                fut.set_result(result)
            if not fut.done():  # cancelled by the scope: the caller gave up, or the runtime closes
                fut.set_exception(RuntimeClosed("cancelled"))

        def spawn() -> None:
            if self._nursery is None:
                fut.set_exception(RuntimeClosed("the libp2p runtime has stopped"))
            else:
                self._nursery.start_soon(run)

        self._post(spawn)
        return fut, scope

    async def call(self, fn: Callable[..., Awaitable[T]], *args: Any) -> T:
        """From asyncio: the result of `await fn(*args)` run in the trio thread."""
        fut, scope = self.submit(fn, *args)
        try:
            return await asyncio.wrap_future(fut)
        except asyncio.CancelledError:
            with contextlib.suppress(RuntimeClosed):
                self._post(scope.cancel)
            raise

    async def start_service(self, fn: Callable[..., Awaitable[object]]) -> None:
        """From asyncio: start `fn(task_status=...)` in the root nursery (it lives until `close`) and
        return once it called `task_status.started()`."""

        async def start() -> None:
            if self._nursery is None:
                raise RuntimeClosed("the libp2p runtime has stopped")
            await self._nursery.start(fn)

        await self.call(start)

    def close(self, timeout: float = 5.0) -> bool:
        """Cancel every trio task and join the thread; False when it did not end within `timeout`."""
        thread = self._thread
        if thread is None:
            return True
        nursery = self._nursery
        if nursery is not None:
            with contextlib.suppress(RuntimeClosed):
                self._post(nursery.cancel_scope.cancel)
        thread.join(timeout)
        if thread.is_alive():
            log.warning("the libp2p runtime did not stop within %.1f s; leaving its thread behind", timeout)
            return False
        self._thread = None
        return True


async def to_asyncio(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, T]) -> T:
    """From trio: run `coro` on the asyncio `loop` and wait for it without blocking trio."""
    fut = asyncio.run_coroutine_threadsafe(coro, loop)
    done = trio.Event()
    token = trio.lowlevel.current_trio_token()

    def wake(_: cf.Future[T]) -> None:
        with contextlib.suppress(trio.RunFinishedError):
            token.run_sync_soon(done.set)

    fut.add_done_callback(wake)
    try:
        await done.wait()
    except BaseException:
        fut.cancel()
        raise
    return fut.result()


def call_soon_asyncio(loop: asyncio.AbstractEventLoop, fn: Callable[[], object]) -> None:
    """From trio: run a plain callback on the asyncio loop (counters, events); never raises if it closed."""
    with contextlib.suppress(RuntimeError):
        loop.call_soon_threadsafe(fn)
