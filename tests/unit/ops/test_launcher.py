"""`DaemonProcess` before and after its process, a daemon forked from the forkserver against one that
is a fresh interpreter, and `wait_until`'s deadline."""

from __future__ import annotations

import signal
import subprocess
import time

import pytest

from swarmd.daemon.faults import ENV, GUARD
from swarmd.errors import ConfigError, DaemonError
from swarmd.ops import DaemonProcess, stop_all, wait_until


def test_a_daemon_never_started_is_quiet(tmp_path, consortium):
    d = DaemonProcess("site-a", consortium.sites[0].config, tmp_path / "swarmd.log")
    assert d.pid is None and not d.alive()
    assert d.status() is None  # no control socket: not answering, not an error
    assert d.tail() == ""
    assert d.stop() is None and stop_all([d]) == [None]
    d.kill()
    d.terminate()


def test_wait_until_returns_the_first_truthy_value():
    values = iter([0, None, "", 7])
    assert wait_until(lambda: next(values), 5, interval=0.01) == 7


def test_wait_until_names_what_it_waited_for():
    start = time.monotonic()
    with pytest.raises(DaemonError, match="timed out after 0s waiting for the moon"):
        wait_until(lambda: False, 0.2, interval=0.05, what="the moon")
    assert time.monotonic() - start < 2


@pytest.mark.parametrize("fork", [False, True], ids=["subprocess", "forked"])
def test_a_daemon_gets_its_environment_and_log_and_exits_with_its_code_either_way(tmp_path, consortium, fork):
    """The environment given to start() reaches the daemon (here a fault name it refuses, before it does
    anything else), what it prints lands in its log, and its exit code is the error family's."""
    d = DaemonProcess("site-a", consortium.sites[0].config, tmp_path / "swarmd.log", fork=fork)
    d.start(env={ENV: "no-such-fault", GUARD: "1"})
    assert d.proc is not None and d.proc.wait(120) == ConfigError.exit_code
    assert not d.alive() and d.stop() == ConfigError.exit_code
    assert "unknown fault 'no-such-fault'" in d.tail(), d.tail()


def test_a_forked_daemon_is_its_own_process_for_signals(tmp_path, consortium):
    """SIGSTOP, SIGCONT and SIGKILL reach the forked daemon's own pid, and a kill reads as Popen's does."""
    d = DaemonProcess("site-a", consortium.sites[0].config, tmp_path / "swarmd.log", fork=True).start()
    assert d.proc is not None and d.pid is not None and d.alive()
    d.proc.send_signal(signal.SIGSTOP)
    d.proc.send_signal(signal.SIGCONT)
    with pytest.raises(subprocess.TimeoutExpired, match="forked"):
        d.proc.wait(0.1)
    d.kill()
    assert d.proc.returncode == -signal.SIGKILL and not d.alive()
    d.proc.send_signal(signal.SIGTERM)  # after the end: nothing is sent (its pid may be reused)
