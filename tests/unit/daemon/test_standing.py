"""This site's standing as the daemon tracks it (`membership.MembershipWatch`), and the names its peers
go by in logs and tables (`membership.PeerNames`)."""

from __future__ import annotations

import logging

import pytest

from swarmd.daemon.membership import MembershipWatch, PeerNames, Standing
from swarmd.ledger import MemberStatus

A, B, C = "0x" + "aa" * 20, "0x" + "bb" * 20, "0x" + "cc" * 20


def test_every_chain_status_maps_to_a_standing_with_words_and_advice():
    assert [Standing.of(s) for s in MemberStatus] == [
        Standing.NOT_MEMBER,
        Standing.PENDING,
        Standing.ACTIVE,
        Standing.REMOVED,
    ]
    assert Standing.PENDING.words == "pending admission" and "swarm admit" in Standing.PENDING.advice
    assert Standing.NOT_MEMBER.words == "not a member" and "swarm join" in Standing.NOT_MEMBER.advice
    assert Standing.REMOVED.words == "removed"


def test_a_change_is_reported_once_not_on_every_poll(caplog: pytest.LogCaptureFixture):
    watch = MembershipWatch("site-c")
    caplog.set_level(logging.INFO, logger="swarmd.membership")
    polls = [MemberStatus.NONE, MemberStatus.PENDING, MemberStatus.PENDING, MemberStatus.PENDING]
    polls += [MemberStatus.ACTIVE, MemberStatus.ACTIVE, MemberStatus.REMOVED, MemberStatus.REMOVED]
    changed = [watch.update(s) for s in polls]
    assert changed == [True, True, False, False, True, False, True, False]
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 4
    assert "site-c is not a member" in lines[0] and "site-c is pending admission" in lines[1]
    assert "active member; starting to train" in lines[2] and "site-c is removed" in lines[3]
    assert watch.standing is Standing.REMOVED and not watch.active


def test_an_active_start_says_training_not_starting():
    watch = MembershipWatch("lead")
    assert watch.standing is Standing.UNKNOWN and not watch.active
    assert watch.update(MemberStatus.ACTIVE) and watch.active


def test_peers_go_by_their_names_and_a_shared_name_shows_each_account():
    names = PeerNames()
    names.update({A: "charite", B: "st-mary", C: "charite"})
    assert names.label(B) == "st-mary"
    assert names.label(A) == f"charite@{A[:10]}" and names.label(C) == f"charite@{C[:10]}"
    unnamed = "0x" + "dd" * 20
    assert names.label(unnamed) == unnamed and names.label(None) == "-"
    assert names.knows(A) and not names.knows(unnamed)
    assert names.as_dict()[B] == "st-mary"
