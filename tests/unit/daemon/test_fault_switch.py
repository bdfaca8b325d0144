"""The test-fault switch: off by default, refused outside the suite, per-site when asked."""

from __future__ import annotations

import pytest

from swarmd.daemon.faults import ENV, GUARD, Fault, active_faults
from swarmd.errors import ConfigError

IN_TESTS = {GUARD: "1", "PYTEST_CURRENT_TEST": "x"}


def test_off_by_default() -> None:
    assert active_faults({}, "site-1") == frozenset()
    assert active_faults({**IN_TESTS, ENV: " "}, "site-1") == frozenset()


@pytest.mark.parametrize("env", [{ENV: "forge-merge"}, {ENV: "forge-merge", GUARD: "1"}])
def test_refused_outside_the_suite(env: dict[str, str]) -> None:
    with pytest.raises(ConfigError, match="refused outside the test suite"):
        active_faults(env, "site-1")


def test_per_site_and_unknown() -> None:
    env = {**IN_TESTS, ENV: "forge-merge@site-2, drop-update"}
    assert active_faults(env, "site-2") == {Fault.FORGE_MERGE, Fault.DROP_UPDATE}
    assert active_faults(env, "site-1") == {Fault.DROP_UPDATE}
    with pytest.raises(ConfigError, match="unknown fault 'nap'"):
        active_faults({**IN_TESTS, ENV: "nap"}, "site-1")


def test_one_entry_per_site_for_several() -> None:
    env = {**IN_TESTS, ENV: "decline-lead@site-1,decline-lead@site-2"}
    assert [active_faults(env, f"site-{i}") for i in (1, 2, 3)] == [{Fault.DECLINE_LEAD}] * 2 + [frozenset()]
