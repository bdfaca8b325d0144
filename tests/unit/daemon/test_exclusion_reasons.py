"""The leader's exclusion labels become the ledger's Outcome codes: a hash mismatch stays one, every
validation failure is FAILED_VALIDATION, a late update and the leader's own "not delivered" are
NOT_DELIVERED, and a label nobody mapped is a failed validation rather than an error."""

from __future__ import annotations

import logging

import pytest
import torch

from swarmd.daemon.accounting import NOT_DELIVERED, REJECTED_BY_RULE, exclusion_reason, exclusion_reasons
from swarmd.daemon.exchange import Exchange
from swarmd.errors import InvalidUpdate
from swarmd.ledger import Outcome
from swarmd.merge import RejectReason
from swarmd.merge.fedavg import FedAvg

A, B, C = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


@pytest.mark.parametrize("reason", [r for r in RejectReason if r is not RejectReason.LATE])
def test_every_validation_label_is_failed_validation(reason: RejectReason) -> None:
    assert exclusion_reason(reason.value) is Outcome.FAILED_VALIDATION


def test_delivery_and_rule_labels_keep_their_meaning() -> None:
    assert exclusion_reason("hash_mismatch") is Outcome.HASH_MISMATCH
    assert exclusion_reason(NOT_DELIVERED) is Outcome.NOT_DELIVERED
    assert exclusion_reason(RejectReason.LATE.value) is Outcome.NOT_DELIVERED
    assert exclusion_reason(REJECTED_BY_RULE) is Outcome.REJECTED_BY_RULE
    assert exclusion_reason("structure") is Outcome.FAILED_VALIDATION  # a malformed masked update


def test_an_unknown_label_is_a_logged_failed_validation(caplog) -> None:
    with caplog.at_level(logging.WARNING):
        assert exclusion_reason("brand_new_check") is Outcome.FAILED_VALIDATION
    assert "brand_new_check" in caplog.text


def test_a_real_exchange_reports_the_reason_of_each_excluded_committer_only() -> None:
    base = {"w": torch.zeros(3)}
    good, bad = {"w": torch.ones(3)}, {"w": torch.tensor([1.0, float("nan"), 0.0])}
    ex = Exchange(
        round=1,
        term=0,
        expected={A: (b"\1" * 32, 4), B: (b"\2" * 32, 4), C: (b"\3" * 32, 4)},
        base=base,
        rule=FedAvg(),
        is_diff=False,
    )
    ex.offer(A, good, b"\1" * 32)
    with pytest.raises(InvalidUpdate):
        ex.offer(B, bad, b"\2" * 32)  # arrives intact, fails validation
    with pytest.raises(InvalidUpdate):
        ex.offer(C, good, b"\4" * 32)  # not what C committed
    assert exclusion_reasons(ex) == {B: Outcome.FAILED_VALIDATION, C: Outcome.HASH_MISMATCH}
