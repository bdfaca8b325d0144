import pytest
import torch

from swarmd.codec import content_hash
from swarmd.daemon.exchange import Exchange
from swarmd.errors import UpdateRejected
from swarmd.merge import get_rule


def _state(v: float) -> dict[str, torch.Tensor]:
    return {"w": torch.full((3,), v), "b": torch.tensor([v])}


def _load(*states):
    """The leader's store, as Exchange.result reads it: digest -> update."""
    return {content_hash(s): s for s in states}.__getitem__


def _exchange(expected, **kw) -> Exchange:
    return Exchange(
        round=0, term=1, expected=expected, base=_state(0.0), rule=get_rule("fedavg"), is_diff=False, **kw
    )


async def test_weighted_merge_and_completion():
    a, b = _state(1.0), _state(4.0)
    ex = _exchange({"A": (content_hash(a), 1), "B": (content_hash(b), 3)})
    ex.offer("A", a, content_hash(a))
    assert not ex.complete.is_set()
    ex.offer("B", b, content_hash(b))
    assert ex.complete.is_set()
    ex.fold(_load(a, b))
    merged, included = ex.result()
    assert included == ["A", "B"]
    torch.testing.assert_close(merged["w"], torch.full((3,), 3.25))


async def test_hash_mismatch_is_excluded_and_honest_updates_still_merge():
    a, b, forged = _state(1.0), _state(2.0), _state(100.0)
    ex = _exchange({"A": (content_hash(a), 1), "B": (content_hash(b), 1)})
    with pytest.raises(UpdateRejected, match="on chain"):
        ex.offer("B", forged, content_hash(forged))
    ex.offer("A", a, content_hash(a))
    assert ex.complete.is_set() and ex.excluded == {"B": "hash_mismatch"}
    ex.fold(_load(a))
    merged, included = ex.result()
    assert included == ["A"]
    torch.testing.assert_close(merged["w"], torch.full((3,), 1.0))


async def test_non_committer_duplicate_and_invalid_updates_are_refused():
    a = _state(1.0)
    bad = {"w": torch.tensor([float("nan"), 0.0, 0.0]), "b": torch.tensor([0.0])}
    ex = _exchange({"A": (content_hash(a), 1), "C": (content_hash(bad), 1)})
    with pytest.raises(UpdateRejected, match="did not commit"):
        ex.offer("Z", a, content_hash(a))
    ex.offer("A", a, content_hash(a))
    with pytest.raises(UpdateRejected, match="already delivered"):
        ex.offer("A", a, content_hash(a))
    with pytest.raises(UpdateRejected):
        ex.offer("C", bad, content_hash(bad))
    assert ex.excluded["C"] == "nonfinite"


async def test_an_update_counts_only_once_accepted_and_nothing_after_the_merge_began():
    """The leader checks an update, stores it, then accepts it: the exchange completes (and the merge
    reads the store) only once every update is stored; one arriving after the merge began is late."""
    a, b = _state(1.0), _state(2.0)
    ex = _exchange({"A": (content_hash(a), 1), "B": (content_hash(b), 1)})
    ex.offer("A", a, content_hash(a))
    ex.check("B", b, content_hash(b))
    assert not ex.complete.is_set() and ex.pending == {"B"}
    ex.close()
    with pytest.raises(UpdateRejected, match="after round 0's merge began"):
        ex.accept("B", content_hash(b))
    ex.fold(_load(a))
    assert ex.result()[1] == ["A"]
