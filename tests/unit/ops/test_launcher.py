"""`DaemonProcess` before and after its process, and `wait_until`'s deadline: no daemon needed."""

from __future__ import annotations

import time

import pytest

from swarmd.errors import DaemonError
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
