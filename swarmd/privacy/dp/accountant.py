"""A site's privacy account for one task: the rounds it has spent epsilon on, kept in its state dir.

The file holds the plan's accounting fields and the sorted round numbers, written atomically (tmp, fsync,
rename), so a `kill -9` leaves the old account or the new one. Epsilon is never stored as the truth: it is
recomputed from (plan, number of rounds) by Opacus's accountant, so a file and the chain agree by
construction. A fresh state dir is rebuilt from the rounds the chain shows this site committing.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

from swarmd.fsutil import atomic_write_text
from swarmd.privacy.dp.errors import AccountantStateError, BudgetSpent, DPError
from swarmd.privacy.dp.plan import DPPlan, epsilon_for

VERSION = 1


def _round_number(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise DPError(f"a round number must be an int >= 0, got {value!r}")
    return value


class Accountant:
    """Epsilon spent by this site under `plan`, persisted at `path`."""

    def __init__(self, plan: DPPlan, path: Path) -> None:
        self.plan = plan
        self.path = Path(path)
        self._rounds: frozenset[int] = self._load()

    # --- reading ----------------------------------------------------------------------------------

    @property
    def rounds(self) -> tuple[int, ...]:
        return tuple(sorted(self._rounds))

    @property
    def epsilon(self) -> float:
        return epsilon_for(self.plan, len(self._rounds))

    def epsilon_after_next(self) -> float:
        return epsilon_for(self.plan, len(self._rounds) + 1)

    def would_exceed(self, budget: float) -> bool:
        """Whether one more round passes `budget` (0: no budget, never)."""
        return budget > 0.0 and self.epsilon_after_next() > budget

    def check_budget(self, budget: float) -> None:
        """Raise BudgetSpent when one more round would pass `budget`."""
        if self.would_exceed(budget):
            raise BudgetSpent(self.epsilon, self.epsilon_after_next(), budget)

    # --- writing ----------------------------------------------------------------------------------

    def record(self, round: int) -> float:
        """Count `round` as spent (once, however often it is recorded); return the new epsilon.

        Record before the round's update leaves the site: a crash in between then overstates the
        account by one round, never understates it."""
        r = _round_number(round)
        if r not in self._rounds:
            self._save(self._rounds | {r})
        return self.epsilon

    def rebuild(self, rounds: Iterable[int]) -> None:
        """Replace the account with `rounds` (e.g. this site's commits on the chain)."""
        self._save(frozenset(_round_number(r) for r in rounds))

    def _save(self, rounds: frozenset[int]) -> None:
        doc = {"v": VERSION, "plan": self.plan.to_json(), "rounds": sorted(rounds)}
        atomic_write_text(self.path, json.dumps(doc, sort_keys=True, separators=(",", ":")) + "\n", 0o600)
        self._rounds = rounds

    def _load(self) -> frozenset[int]:
        try:
            text = self.path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return frozenset()
        except (OSError, UnicodeDecodeError) as exc:
            raise AccountantStateError(f"cannot read the privacy account {self.path}: {exc}") from None
        try:
            doc = json.loads(text)
            if not isinstance(doc, dict) or doc.get("v") != VERSION:
                raise ValueError(f"not a version {VERSION} account")
            plan, rounds = doc["plan"], doc["rounds"]
            if not isinstance(plan, dict) or not isinstance(rounds, list):
                raise ValueError("plan or rounds of the wrong type")
            spent = frozenset(_round_number(r) for r in rounds)
        except (ValueError, KeyError, DPError) as exc:
            raise AccountantStateError(
                f"the privacy account {self.path} is corrupt: {exc}",
                hint="move it aside; the daemon rebuilds it from the chain",
            ) from None
        mine = self.plan.to_json()
        differ = sorted(k for k in mine if k not in ("per_site_noise", "clip") and plan.get(k) != mine[k])
        if differ:
            raise AccountantStateError(
                f"the privacy account {self.path} was kept under another plan "
                f"(it differs in {', '.join(differ)})",
                hint="the site's data size or the task changed; epsilon spent under the old plan counts",
            )
        return spent
