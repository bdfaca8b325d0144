"""This site's own standing in the consortium as the chain says it, and the names peers go by.

`Standing` is the vocabulary (`swarm status`, the `swarmd_membership` metric, the log); `MembershipWatch`
turns each poll's chain record into a standing and reports a change once, not on every poll. A site
trains only while it is active: pending, never asked, or removed, it waits and says why.

`PeerNames` labels accounts for logs and tables by the site names their join requests published on
chain. A name is the joining site's own word: only valid names (config.site_name_problem) are used,
a name two accounts claim is shown with each account, and a site without one shows its account, so a
name never passes for another site or for an address.
"""

from __future__ import annotations

import logging
from collections import Counter
from enum import Enum

from swarmd.ledger import MemberStatus

log = logging.getLogger("swarmd.membership")


class Standing(str, Enum):
    """Where this site stands; the value is the metric's state label."""

    UNKNOWN = "unknown"  # not read from the chain yet
    NOT_MEMBER = "not_member"  # never asked to join
    PENDING = "pending"  # asked, not admitted yet
    ACTIVE = "active"
    REMOVED = "removed"

    @property
    def words(self) -> str:
        """How logs and `swarm status` say it."""
        return _WORDS[self]

    @property
    def advice(self) -> str:
        return _ADVICE[self]

    @classmethod
    def of(cls, status: MemberStatus) -> Standing:
        return _OF_STATUS[status]


_WORDS = {
    Standing.UNKNOWN: "unknown (chain not read yet)",
    Standing.NOT_MEMBER: "not a member",
    Standing.PENDING: "pending admission",
    Standing.ACTIVE: "active member",
    Standing.REMOVED: "removed",
}
_ADVICE = {
    Standing.UNKNOWN: "reading the chain",
    Standing.NOT_MEMBER: "run `swarm join --config ...`, then ask the admin (or the members) to admit it",
    Standing.PENDING: "waiting for `swarm admit` by the admin (or a majority); training starts then",
    Standing.ACTIVE: "training",
    Standing.REMOVED: "removed by the consortium; not training (`swarm join` asks again)",
}
_OF_STATUS = {
    MemberStatus.NONE: Standing.NOT_MEMBER,
    MemberStatus.PENDING: Standing.PENDING,
    MemberStatus.ACTIVE: Standing.ACTIVE,
    MemberStatus.REMOVED: Standing.REMOVED,
}


class MembershipWatch:
    """This site's standing, updated from each chain poll; a change is logged once."""

    def __init__(self, site: str) -> None:
        self.site = site
        self.standing = Standing.UNKNOWN

    @property
    def active(self) -> bool:
        return self.standing is Standing.ACTIVE

    def update(self, status: MemberStatus) -> bool:
        """Take the chain's status of this site; True when the standing changed (and was logged)."""
        new = Standing.of(status)
        if new is self.standing:
            return False
        old, self.standing = self.standing, new
        if new is Standing.ACTIVE:
            how = "starting to train" if old is not Standing.UNKNOWN else "training"
            log.info("membership: %s is an active member; %s", self.site, how)
        else:
            log.warning("membership: %s is %s; %s", self.site, new.words, new.advice)
        return True


class PeerNames:
    """account -> label for logs and tables, from the names published on chain."""

    def __init__(self) -> None:
        self._names: dict[str, str] = {}
        self._labels: dict[str, str] = {}

    def update(self, names: dict[str, str]) -> None:
        """Take account -> name (valid names only; the ledger dropped the rest)."""
        self._names = dict(names)
        claims = Counter(names.values())
        self._labels = {
            account: name if claims[name] == 1 else f"{name}@{account[:10]}"
            for account, name in names.items()
        }

    def knows(self, account: str) -> bool:
        return account in self._names

    def label(self, account: str | None) -> str:
        """The account's site name (with the account when the name is claimed twice), else the account."""
        if not account:
            return "-"
        return self._labels.get(account, account)

    def as_dict(self) -> dict[str, str]:
        return dict(self._labels)
