"""sd_notify: tell systemd the daemon is ready, what it is doing, and that it is alive.

The protocol is one unix datagram of `KEY=VALUE` lines sent to the socket named by
$NOTIFY_SOCKET; a leading '@' names a socket in the abstract namespace. systemd sets the variable
only for `Type=notify` services, so outside systemd (a terminal, tests, containers) every call
is a no-op. $WATCHDOG_USEC (with $WATCHDOG_PID, when set, naming this process) asks for a
`WATCHDOG=1` ping at least that often; `watchdog_interval()` returns that timeout in seconds.

A notification that cannot be delivered is logged and dropped: systemd missing a status line must
never stop a round.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Mapping

log = logging.getLogger(__name__)


def _address(env: Mapping[str, str]) -> str | None:
    path = env.get("NOTIFY_SOCKET", "")
    if not path:
        return None
    # Abstract-namespace sockets are spelled with '@' and addressed with a leading NUL byte.
    return "\0" + path[1:] if path.startswith("@") else path


def notify(*fields: str, env: Mapping[str, str] | None = None) -> bool:
    """Send `KEY=VALUE` fields in one datagram. Returns True when one was sent, False otherwise."""
    address = _address(os.environ if env is None else env)
    if address is None:
        return False
    message = "\n".join(fields).encode("utf-8")
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(message)
    except OSError as exc:
        log.warning("sd_notify to %r failed: %s", address.replace("\0", "@"), exc)
        return False
    return True


def ready(status_text: str | None = None) -> bool:
    """The daemon finished starting (systemd then considers the unit active)."""
    return notify("READY=1", *([_status_field(status_text)] if status_text else []))


def status(text: str) -> bool:
    """A one-line status that `systemctl status swarmd` shows, e.g. "round 4: exchange"."""
    return notify(_status_field(text))


def watchdog() -> bool:
    """The keep-alive ping; systemd restarts the unit when these stop for WatchdogSec."""
    return notify("WATCHDOG=1")


def stopping(status_text: str | None = None) -> bool:
    """The daemon began a graceful shutdown."""
    return notify("STOPPING=1", *([_status_field(status_text)] if status_text else []))


def reloading() -> bool:
    return notify("RELOADING=1")


def _status_field(text: str) -> str:
    # A newline would start a new field; systemd shows one line anyway.
    return "STATUS=" + " ".join(text.split())


def watchdog_interval(env: Mapping[str, str] | None = None) -> float | None:
    """The watchdog timeout in seconds ($WATCHDOG_USEC), or None when systemd set no watchdog.

    Ping at least twice per timeout, as sd_watchdog_enabled(3) advises. None also when
    $WATCHDOG_PID names another process, or when the value is malformed (logged: the unit file is
    then wrong, but the daemon can still run).
    """
    env = os.environ if env is None else env
    usec = env.get("WATCHDOG_USEC", "")
    if not usec:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid != str(os.getpid()):
        return None
    try:
        value = int(usec)
    except ValueError:
        log.warning("ignoring malformed WATCHDOG_USEC=%r", usec)
        return None
    if value <= 0:
        return None
    return value / 1_000_000
