"""`serve()` runs a daemon's startup, main loop and shutdown in this process and answers real
signals: the first SIGTERM/SIGINT asks for a graceful stop, a second forces one; shutdown always
runs and is bounded by its timeout; `serve` returns an exit status and never exits itself."""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
import sys

import pytest

from swarmd.daemon import lifecycle
from swarmd.daemon.lifecycle import JsonFormatter, serve
from swarmd.errors import ConfigError


class FakeDaemon:
    """The lifecycle of `app.Daemon` without the subsystems: a main loop that runs until asked to stop."""

    def __init__(self, *, heeds_stop: bool = True, shutdown_hangs: bool = False, fail_startup: bool = False):
        self.heeds_stop = heeds_stop
        self.shutdown_hangs = shutdown_hangs
        self.fail_startup = fail_startup
        self.calls: list[str] = []
        self.running = asyncio.Event()
        self._stop = asyncio.Event()

    async def startup(self) -> None:
        self.calls.append("startup")
        if self.fail_startup:
            raise ConfigError("site.data_list is not set")

    async def main_loop(self) -> None:
        self.calls.append("main_loop")
        self.running.set()
        await self._stop.wait()  # until a graceful stop is requested (or the task is cancelled)

    def request_stop(self) -> None:
        self.calls.append("request_stop")
        if self.heeds_stop:
            self._stop.set()

    async def shutdown(self) -> None:
        self.calls.append("shutdown")
        if self.shutdown_hangs:
            await asyncio.sleep(3600)
        self.calls.append("shutdown done")


async def _running(daemon: FakeDaemon) -> asyncio.Task[int]:
    task = asyncio.ensure_future(serve(daemon))
    await asyncio.wait_for(daemon.running.wait(), timeout=5.0)
    return task


async def test_a_main_loop_that_ends_returns_0_after_shutdown() -> None:
    daemon = FakeDaemon()
    daemon.request_stop()  # the loop returns at once
    assert await serve(daemon) == 0
    assert daemon.calls == ["request_stop", "startup", "main_loop", "shutdown", "shutdown done"]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
async def test_the_first_signal_asks_for_a_graceful_stop(sig: signal.Signals) -> None:
    daemon = FakeDaemon()
    task = await _running(daemon)
    os.kill(os.getpid(), sig)
    assert await asyncio.wait_for(task, timeout=5.0) == 0
    assert daemon.calls == ["startup", "main_loop", "request_stop", "shutdown", "shutdown done"]


async def test_a_second_signal_forces_the_stop_and_shutdown_still_runs() -> None:
    daemon = FakeDaemon(heeds_stop=False)  # e.g. training that does not reach a safe point soon
    task = await _running(daemon)
    os.kill(os.getpid(), signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert not task.done() and daemon.calls[-1] == "request_stop"
    os.kill(os.getpid(), signal.SIGTERM)
    assert await asyncio.wait_for(task, timeout=5.0) == 130
    assert daemon.calls == ["startup", "main_loop", "request_stop", "shutdown", "shutdown done"]


async def test_shutdown_is_bounded_by_its_timeout(monkeypatch, caplog) -> None:
    monkeypatch.setattr(lifecycle, "SHUTDOWN_TIMEOUT", 0.3)
    daemon = FakeDaemon(shutdown_hangs=True)
    daemon.request_stop()
    with caplog.at_level(logging.ERROR, logger="swarmd"):
        assert await asyncio.wait_for(serve(daemon), timeout=5.0) == 0
    assert daemon.calls[-1] == "shutdown"  # abandoned, not finished
    assert "shutdown did not finish within 0s" in caplog.text


async def test_a_failed_startup_is_raised_to_the_caller_not_exited_on(monkeypatch) -> None:
    def no_exit(code: object = None) -> None:
        raise AssertionError("serve must leave exiting to the CLI")

    monkeypatch.setattr(sys, "exit", no_exit)
    daemon = FakeDaemon(fail_startup=True)
    with pytest.raises(ConfigError):
        await serve(daemon)
    assert daemon.calls == ["startup", "shutdown", "shutdown done"]  # what startup built is released


def test_log_lines_are_one_json_object_with_extra_fields() -> None:
    record = logging.LogRecord("swarmd.rounds", logging.WARNING, __file__, 1, "round %d: %s", (3, "x"), None)
    record.fields = {"round": 3}
    doc = json.loads(JsonFormatter().format(record))
    assert (doc["level"], doc["logger"], doc["msg"], doc["round"]) == (
        "warning",
        "swarmd.rounds",
        "round 3: x",
        3,
    )
    try:
        raise ValueError("boom")
    except ValueError:
        record.exc_info = sys.exc_info()
    assert "ValueError: boom" in json.loads(JsonFormatter().format(record))["exc"]


async def test_a_main_loop_that_never_reaches_a_safe_point_is_cancelled_within_the_budget(
    monkeypatch, caplog
) -> None:
    """One SIGTERM is enough: what a second signal forces happens by itself after SAFE_POINT_TIMEOUT."""
    monkeypatch.setattr(lifecycle, "SAFE_POINT_TIMEOUT", 0.2)
    daemon = FakeDaemon(heeds_stop=False)
    task = await _running(daemon)
    with caplog.at_level(logging.WARNING, logger="swarmd"):
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(task, timeout=5.0) == 130
    assert daemon.calls == ["startup", "main_loop", "request_stop", "shutdown", "shutdown done"]
    assert "no safe point within 0s of SIGTERM: forcing shutdown" in caplog.text


def test_the_stop_budget_holds_both_bounds() -> None:
    assert lifecycle.SAFE_POINT_TIMEOUT + lifecycle.SHUTDOWN_TIMEOUT < lifecycle.STOP_BUDGET <= 10.0


def test_settling_the_heap_collects_garbage_first_then_freezes_what_is_alive() -> None:
    import gc
    import weakref

    class Node:
        other: object = None

    a, b = Node(), Node()
    a.other, b.other = b, a  # a cycle: only the cyclic collector frees it
    dead = weakref.ref(a)
    del a, b
    try:
        frozen = lifecycle.settle_heap()
        assert dead() is None, "garbage was frozen with the living (leaked for the process's life)"
        assert frozen == gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this is the test process: give its objects back to the collector
