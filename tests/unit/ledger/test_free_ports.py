"""free_ports: blocks of ports for local daemons and anvil, drawn below the kernel's ephemeral range (where
no outgoing connection takes one as its source port before the server binds it), and never one in use."""

from __future__ import annotations

import random
import socket

import pytest

from swarmd.ledger import devnet
from swarmd.ledger.devnet import PORT_FLOOR, free_ports


def _bindable(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_blocks_lie_below_the_ephemeral_range_and_are_free():
    low = devnet._ephemeral_low()
    bases = free_ports(4, width=3)
    assert len(bases) == 4
    ports = [b + k for b in bases for k in range(3)]
    assert len(set(ports)) == len(ports)  # no two blocks overlap
    assert all(PORT_FLOOR <= p < low for p in ports)
    assert all(_bindable(p) for p in ports)


def test_a_port_in_use_is_never_handed_out(monkeypatch):
    floor = random.randrange(PORT_FLOOR, 30000)
    monkeypatch.setattr(devnet, "PORT_FLOOR", floor)
    monkeypatch.setattr(devnet, "_ephemeral_low", lambda: floor + 6)  # candidates: floor .. floor + 4
    held = []
    try:
        for port in range(floor, floor + 5):
            if port != floor + 3:
                s = socket.socket()
                s.bind(("127.0.0.1", port))
                held.append(s)
        assert free_ports(1) == [floor + 3]
    finally:
        for s in held:
            s.close()


def test_no_room_below_the_range_falls_back_to_the_kernel(monkeypatch):
    monkeypatch.setattr(devnet, "_ephemeral_low", lambda: PORT_FLOOR)
    (base,) = free_ports(1, width=2)
    assert _bindable(base) and _bindable(base + 1)


def test_no_free_block_at_all_is_a_named_error(monkeypatch):
    monkeypatch.setattr(devnet, "_bind_block", lambda base, width: [])
    with pytest.raises(devnet.DevnetError, match="no 2 blocks of 3 free ports"):
        free_ports(2, width=3)


def test_a_block_found_on_the_last_try_is_returned(monkeypatch):
    tries, real = iter(range(100)), devnet._bind_block

    def bind(base: int, width: int) -> list[socket.socket]:
        # Only the 100th try binds; a port the kernel just handed out, not the random `base`, which a busy
        # run's TIME_WAIT connections may hold (a test of the loop, not of luck).
        return [] if next(tries) < 99 else real(devnet._kernel_port(), width)

    monkeypatch.setattr(devnet, "_bind_block", bind)
    assert len(free_ports(1)) == 1
