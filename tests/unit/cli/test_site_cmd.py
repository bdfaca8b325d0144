"""What `swarm admit | remove` and `swarm init` print: the ballot tally of a majority vote, and the
ports a site's peers must reach."""

from __future__ import annotations

from swarmd.cli.site_cmd import _ports_note, vote_line
from swarmd.ledger import VoteTally

CANDIDATE, VOTER = "0x" + "ab" * 20, "0x" + "cd" * 20


def test_an_admin_decision_prints_the_status_only():
    assert vote_line(CANDIDATE, "active", None) == f"{CANDIDATE}: active"


def test_a_vote_short_of_the_majority_prints_the_tally_and_what_is_missing():
    line = vote_line(CANDIDATE, "pending", VoteTally(CANDIDATE, VOTER, True, 1, 3))
    assert line == f"{CANDIDATE}: pending (admission votes 1 of 3 needed, pending: 2 more needed)"


def test_the_deciding_vote_prints_passed():
    line = vote_line(CANDIDATE, "removed", VoteTally(CANDIDATE, VOTER, False, 2, 2))
    assert line == f"{CANDIDATE}: removed (removal votes 2 of 2 needed, passed)"


def test_init_names_the_bulk_port_next_to_the_bind_port():
    note = _ports_note("tcp://0.0.0.0:7700", "tcp://site.example:7700", "aead")
    assert "tcp://site.example:7700" in note and "port 7701" in note and "open both" in note
    assert "7701" not in _ports_note("tcp://0.0.0.0:7700", "tcp://site.example:7700", "curve")
