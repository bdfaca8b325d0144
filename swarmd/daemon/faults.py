"""Test-only faults a daemon can be told to commit, so the suite can show that audits and disputes
catch a dishonest leader. Off by default; refused outside the test suite.

A fault is switched on by `SWARMD_TEST_FAULTS` (comma-separated: `forge-merge`, or `forge-merge@site-2`
for one site only; one entry per site for several), and only when pytest is running the process's
parent test (`PYTEST_CURRENT_TEST` is inherited by the daemons a test starts) and `SWARMD_TESTING=1`.
Anywhere else the variable is a configuration error: an operator cannot switch a fault on by accident,
and a daemon told to misbehave outside the suite refuses to start rather than ignore it silently.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum

from swarmd.errors import ConfigError

ENV = "SWARMD_TEST_FAULTS"
GUARD = "SWARMD_TESTING"


class Fault(str, Enum):
    FORGE_MERGE = "forge-merge"  # the leader finalizes a model that is not the merge of the included updates
    DROP_UPDATE = "drop-update"  # the leader accepts (and receipts) an update, then reports it not delivered
    # elected, the site does not lead: the others re-elect once its leader_timeout passes, so a test can
    # make the one site without the fault lead every round (issue 18: a private site leads)
    DECLINE_LEAD = "decline-lead"


def active_faults(env: Mapping[str, str], site_name: str) -> frozenset[Fault]:
    """The faults switched on for the site named `site_name`; empty unless the test guard is set."""
    raw = env.get(ENV, "").strip()
    if not raw:
        return frozenset()
    if env.get(GUARD) != "1" or "PYTEST_CURRENT_TEST" not in env:
        raise ConfigError(
            f"{ENV} is set, but test faults are refused outside the test suite",
            hint=f"unset {ENV}: it makes a daemon misbehave on purpose",
        )
    faults: set[Fault] = set()
    for entry in raw.split(","):
        name, _, only = entry.strip().partition("@")
        try:
            fault = Fault(name)
        except ValueError:
            known = ", ".join(f.value for f in Fault)
            raise ConfigError(f"{ENV}: unknown fault {name!r}", hint=f"known: {known}") from None
        if not only or only == site_name:
            faults.add(fault)
    return frozenset(faults)
