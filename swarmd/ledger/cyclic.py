"""A cyclic round's path as the chain fixes it: the order the model visits the sites, drawn from facts
every site and any auditor read alike, and what a finalize of that path must say.

Round r's order sorts the sites by sha256(seed | address), seed = sha256("swarmd-cyclic-order" | r |
baseHash(r)): the model round r - 1 finalized, on chain and unknown before it was. Each site's key is its
own, so any subset (the sites that committed) is in the same relative order whatever the membership
was: an auditor checks the commits' order without knowing who else was active. The daemon side is
`swarmd.daemon.cyclic`; the audit side `swarmd.audit.cyclic`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence

from swarmd.ledger.types import Outcome, RoundInfo

ORDER_TAG = b"swarmd-cyclic-order"


def order_seed(r: int, base_hash: bytes) -> bytes:
    """The seed of round r's order: fixed once round r - 1 finalized `base_hash`."""
    return hashlib.sha256(ORDER_TAG + r.to_bytes(32, "big") + bytes(base_hash)).digest()


def order_key(seed: bytes, site: str) -> bytes:
    """One site's place in the order (its address as 20 raw bytes, so any spelling sorts alike)."""
    return hashlib.sha256(seed + bytes.fromhex(site.lower().removeprefix("0x"))).digest()


def visit_order(r: int, base_hash: bytes, sites: Iterable[str]) -> list[str]:
    """The order the model visits `sites` in round r."""
    seed = order_seed(r, base_hash)
    return sorted(set(sites), key=lambda a: order_key(seed, a))


def successors(order: Sequence[str], site: str) -> list[str]:
    """The sites after `site`, in the order its holder offers them the model (empty when it is last or
    not in the order)."""
    low = [a.lower() for a in order]
    return list(order[low.index(site.lower()) + 1 :]) if site.lower() in low else []


def out_of_order(info: RoundInfo) -> list[str]:
    """The committers whose commit came after one that the drawn order puts later (empty: the commits
    follow the order, a path that only skipped sites)."""
    seed = order_seed(info.round, info.base_hash)
    keys = [order_key(seed, c.site) for c in info.commits]
    return [c.site for c, k, prev in zip(info.commits[1:], keys[1:], keys, strict=False) if k < prev]


def path_end(info: RoundInfo, obtainable: Iterable[str]) -> int | None:
    """The index (in commit order) of the commit a finalize should publish: the last one that revealed its
    election secret and whose model can be had (`obtainable`: addresses); None when there is none."""
    have = {a.lower() for a in obtainable}
    for i in range(len(info.commits) - 1, -1, -1):
        site = info.commits[i].site
        if info.has_revealed(site) and site.lower() in have:
            return i
    return None


def path_included(info: RoundInfo, end: int) -> list[str]:
    """The committers a cyclic finalize includes: the path up to its end, less the non-revealers (the
    contract's NOT_REVEALED); commits after the end never reached the next site (NOT_DELIVERED)."""
    return [c.site for c in info.commits[: end + 1] if info.has_revealed(c.site)]


def finalized_path_problem(info: RoundInfo) -> str:
    """What is wrong with a finalized cyclic round's record ("" when nothing): the merged model must be
    the last included commit's model, and no commit after it may be included."""
    if info.merged_hash is None or not info.outcomes:
        return "the round is not finalized"
    included = [i for i, o in enumerate(info.outcomes) if o is Outcome.INCLUDED]
    if not included:
        return "no commit is included"
    end = included[-1]
    if info.commits[end].update_hash != info.merged_hash:
        return (
            f"the finalized model is not the model of the path's last included commit "
            f"({info.commits[end].site})"
        )
    stray = [
        c.site
        for c, o in zip(info.commits[:end], info.outcomes[:end], strict=False)
        if o not in (Outcome.INCLUDED, Outcome.NOT_REVEALED)
    ]
    if stray:
        return f"commits before the path's end are marked excluded: {', '.join(stray)}"
    late = out_of_order(info)
    if late:
        return f"the commits do not follow the drawn order: {', '.join(late)} came too late"
    return ""
