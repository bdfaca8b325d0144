"""sd_notify against a real AF_UNIX datagram socket, in a path and in the abstract namespace."""

from __future__ import annotations

import os
import socket
import uuid

import pytest

from swarmd.daemon import notify


@pytest.fixture
def notify_socket(tmp_path, monkeypatch):
    """A bound datagram socket standing in for systemd, with $NOTIFY_SOCKET pointing at it."""
    path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(path))
    sock.settimeout(2.0)
    monkeypatch.setenv("NOTIFY_SOCKET", str(path))
    yield sock
    sock.close()


def received(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode("utf-8").split("\n")


def test_ready_status_watchdog_stopping_reach_the_socket(notify_socket):
    assert notify.ready()
    assert received(notify_socket) == ["READY=1"]
    assert notify.status("round 4: exchange")
    assert received(notify_socket) == ["STATUS=round 4: exchange"]
    assert notify.watchdog()
    assert received(notify_socket) == ["WATCHDOG=1"]
    assert notify.stopping("draining")
    assert received(notify_socket) == ["STOPPING=1", "STATUS=draining"]


def test_ready_can_carry_a_status_in_the_same_datagram(notify_socket):
    notify.ready("round 0: train")
    assert received(notify_socket) == ["READY=1", "STATUS=round 0: train"]


def test_a_status_with_newlines_stays_one_field(notify_socket):
    notify.status("line one\nREADY=1")
    assert received(notify_socket) == ["STATUS=line one READY=1"]


def test_abstract_namespace_socket(monkeypatch):
    name = f"swarmd-test-{uuid.uuid4().hex}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind("\0" + name)
    sock.settimeout(2.0)
    try:
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert notify.watchdog()
        assert received(sock) == ["WATCHDOG=1"]
    finally:
        sock.close()


def test_no_socket_means_no_op(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert notify.ready() is False
    assert notify.status("anything") is False
    assert notify.notify("READY=1", env={"NOTIFY_SOCKET": ""}) is False


def test_a_vanished_socket_is_logged_not_raised(tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "gone.sock"))
    assert notify.watchdog() is False
    assert "sd_notify" in caplog.text


@pytest.mark.parametrize(
    ("env", "want"),
    [
        ({}, None),
        ({"WATCHDOG_USEC": "30000000"}, 30.0),
        ({"WATCHDOG_USEC": "1500000", "WATCHDOG_PID": str(os.getpid())}, 1.5),
        ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
        ({"WATCHDOG_USEC": "soon"}, None),
        ({"WATCHDOG_USEC": "0"}, None),
    ],
)
def test_watchdog_interval(env, want):
    assert notify.watchdog_interval(env) == want
