"""A receiver's receipt reaches the sender of an update over real sockets (CURVE control channel, sealed
bulk stream): the verdict the sender gets carries exactly the bytes the receiver's handler returned, a
refusal carries none, and a handler's malformed receipt is left off without costing the acceptance."""

from __future__ import annotations

import pytest
import torch
from harness import FAST

from swarmd.transport import Refusal

pytestmark = pytest.mark.multiproc

SIG = bytes(range(65))


def _pair(loop_node):
    sender, receiver = loop_node(limits=FAST), loop_node(limits=FAST)
    members = {n.node.peer_id: n.node.endpoint for n in (sender, receiver)}
    for n in (sender, receiver):
        n.set_peers(members)
    return sender, receiver


def _send(sender, receiver, r: int = 3):
    state = {"w": torch.arange(4096, dtype=torch.float32)}
    return sender.run(
        sender.node.send_update(receiver.node.peer_id, round=r, term=1, state=state, timeout=10)
    )


def test_the_receipt_travels_with_the_acceptance(loop_node) -> None:
    sender, receiver = _pair(loop_node)
    receiver.handler.receipt = SIG
    verdict = _send(sender, receiver)
    assert verdict.ok and verdict.receipt == SIG
    assert receiver.handler.updates == 1 and sender.node.stats.rejections == {}


def test_no_receipt_on_a_refusal_or_from_a_receiver_without_one(loop_node) -> None:
    sender, receiver = _pair(loop_node)
    receiver.handler.receipt = SIG
    stale = _send(sender, receiver, r=0)  # the test handler refuses round 0 on offer
    assert (stale.ok, stale.reason, stale.receipt) == (False, Refusal.NOT_READY, None)
    receiver.handler.receipt = None
    plain = _send(sender, receiver)
    assert plain.ok and plain.receipt is None


def test_a_malformed_receipt_is_left_off_and_the_update_still_accepted(loop_node) -> None:
    sender, receiver = _pair(loop_node)
    receiver.handler.receipt = SIG[:64]
    verdict = _send(sender, receiver)
    assert verdict.ok and verdict.receipt is None
    assert sender.node.stats.rejections == {}  # the sender never saw a bad reply
