"""The leader's merge path with the robust rules, from a real checkpoint store: stored updates are read
a slice at a time (never whole) and give the same bits as in-memory ones; Krum's unselected update is
excluded as REJECTED_BY_RULE, finalize reports it so, and the rule's verdicts reach the journal."""

from __future__ import annotations

import pytest
import torch

from swarmd.checkpoint import CheckpointStore
from swarmd.checkpoint_reader import StoredState
from swarmd.codec import content_hash
from swarmd.daemon.accounting import exclusion_reasons, finalize_outcomes
from swarmd.daemon.exchange import Exchange
from swarmd.daemon.store import Journal
from swarmd.ledger import CommitInfo, Outcome, RoundInfo, RoundStatus
from swarmd.merge import get_rule

SITES = tuple("0x" + c * 40 for c in "abcde")
PARAMS = {"trimmed_mean": {"trim_ratio": 0.2}, "krum": {"f": 1, "m": 2}}


def _round(evil: str | None = None) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(5)
    base = {
        "big": torch.randn(70_000, generator=g),
        "small": torch.randn(3, 4, generator=g),
        "n": torch.tensor(7),
    }
    ups = {}
    for site in SITES:
        ups[site] = {
            "big": base["big"] + 0.01 * torch.randn(70_000, generator=g),
            "small": base["small"] + 0.01 * torch.randn(3, 4, generator=g),
            "n": torch.tensor(int(torch.randint(0, 20, (), generator=g))),
        }
    if evil:
        ups[evil] = {k: (v * -10 if v.is_floating_point() else v) for k, v in ups[evil].items()}
    return base, ups


def _exchange(rule: str, base, ups) -> Exchange:
    ex = Exchange(
        round=2,
        term=1,
        expected={s: (content_hash(u), 10 + i) for i, (s, u) in enumerate(ups.items())},
        base=base,
        rule=get_rule(rule, **PARAMS.get(rule, {})),
        is_diff=False,
    )
    for site, state in ups.items():
        ex.offer(site, state, content_hash(state))
    return ex


@pytest.mark.parametrize("rule", ["median", "trimmed_mean", "geomedian", "krum"])
def test_stored_updates_are_read_in_slices_and_merge_to_the_same_bits(rule, tmp_path, monkeypatch):
    base, ups = _round(evil=SITES[3])
    store = CheckpointStore(tmp_path)
    for state in ups.values():
        store.put(state)
    in_memory = _exchange(rule, base, ups)
    in_memory.fold({content_hash(s): s for s in ups.values()}.__getitem__)
    want, included = in_memory.result()

    whole_reads: list[str] = []
    real_getitem = StoredState.__getitem__

    def counting(self, name):
        whole_reads.append(name)
        return real_getitem(self, name)

    monkeypatch.setattr(StoredState, "__getitem__", counting)
    stored = _exchange(rule, base, ups)
    stored.fold(store.open)
    got, got_included = stored.result()
    assert content_hash(got) == content_hash(want) and got_included == included
    # Only geomedian, when its median is an update, reads that one update's tensors whole.
    assert len(whole_reads) <= (len(base) if rule == "geomedian" else 0)


def test_krums_unselected_update_is_finalized_rejected_by_rule(tmp_path):
    evil = SITES[2]
    base, ups = _round(evil=evil)
    ex = _exchange("krum", base, ups)
    ex.fold({content_hash(s): s for s in ups.values()}.__getitem__)
    _, included = ex.result()
    assert evil not in included and len(included) == 2  # m = 2 averaged
    assert ex.excluded[evil] == "rejected_by_rule" and evil in ex.received  # stored, servable to an audit
    commits = tuple(CommitInfo(s, content_hash(u), 10 + i, 1) for i, (s, u) in enumerate(ups.items()))
    info = RoundInfo(
        round=2, status=RoundStatus.ELECTED, term=1, leader=SITES[0], commits=commits, failed_leaders=(),
        base_hash=content_hash(base), merged_hash=None, included=(), opened_block=0, first_commit_block=1,
        elected_block=2, finalized_block=None, revealed=SITES,
    )  # fmt: skip
    outcomes = finalize_outcomes(info, included, [], exclusion_reasons(ex))
    rejected = {s for s, o in outcomes.items() if o is Outcome.REJECTED_BY_RULE}
    assert evil in rejected and len(rejected) == 3
    assert {s for s, o in outcomes.items() if o is Outcome.INCLUDED} == set(included)

    summary = ex.verdicts_json()
    assert set(summary) == set(SITES) and summary[evil]["rejected"] is True
    assert "not selected" in str(summary[evil]["note"])
    journal = Journal.open(tmp_path / "journal.json")
    journal.update(2, rule_verdicts=summary)
    assert Journal.open(tmp_path / "journal.json").get(2).rule_verdicts == summary


@pytest.mark.parametrize("rule", ["fedavg", "median", "trimmed_mean", "geomedian"])
def test_down_weighting_rules_reject_no_one_and_report_shares(rule):
    evil = SITES[4]
    base, ups = _round(evil=evil)
    ex = _exchange(rule, base, ups)
    ex.fold({content_hash(s): s for s in ups.values()}.__getitem__)
    _, included = ex.result()
    assert included == list(SITES) and not ex.excluded
    weights = {s: v.weight for s, v in ex.verdicts.items()}
    assert sum(weights.values()) == pytest.approx(1.0)
    if rule == "fedavg":
        assert weights[SITES[0]] == pytest.approx(10 / 60)
    else:  # the sign-flipped, scaled update ends with the least weight
        assert weights[evil] == min(weights.values()) and weights[evil] < 0.1
    if rule == "trimmed_mean":  # k = 1 of 5 cut from each end: the outlier is cut on almost every coordinate
        assert ex.verdicts[evil].trimmed > 0.9


class _FakeLedger:
    """What the merge step reaches of a Ledger client: nothing but its address."""

    address = "0x5FbDB2315678afecb367f032d93F642f64180aa3"


async def test_the_leaders_merge_step_folds_krum_from_its_store_and_leaves_the_outlier_out(unit_driver):
    """RoundDriver.merge, the leader's own path: its stored updates, read back lazily, into Krum."""
    d = unit_driver(ledger=_FakeLedger(), address=SITES[0])  # the merge never reaches the transport
    evil = SITES[1]
    base, ups = _round(evil=evil)
    ex = Exchange(
        round=2,
        term=1,
        expected={s: (d.store.put(u), 10) for s, u in ups.items()},
        base=base,
        rule=get_rule("krum", f=1, m=3),
        is_diff=False,
    )
    for site in SITES:
        h = ex.expected[site][0]
        d.offer_stored(ex, site, d.store.open(h), h)
    done = await d.merge(2, 1, ex, None)
    assert done is not None
    merged, included = done
    assert evil not in included and len(included) == 3 and ex.excluded[evil] == "rejected_by_rule"
    assert exclusion_reasons(ex)[evil] is Outcome.REJECTED_BY_RULE
    assert merged.keys() == base.keys()
