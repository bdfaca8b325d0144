"""The leader's Unmasker: what it takes, what it asks, and when it cannot (and must not) unmask."""

from __future__ import annotations

from pathlib import Path

import msgpack
import numpy as np
import pytest
from secagg_sim import Swarm, answer_all, make_swarm, masked_updates, plain_mean, random_update, unmasker

from swarmd.privacy import BadResponse, BadUpdate, BelowThreshold, SecAggError, SecAggParams, Unmasker
from swarmd.privacy.errors import InconsistentShares


@pytest.fixture
def swarm(tmp_path: Path) -> Swarm:
    return make_swarm(tmp_path, 5)


def _round(swarm: Swarm, seed: int = 0) -> tuple[dict, dict, dict[str, int]]:
    rng = np.random.default_rng(seed)
    updates = {
        s: (random_update(rng, swarm.params.clip_range), 10 * (i + 1)) for i, s in enumerate(swarm.sites)
    }
    return updates, masked_updates(swarm, updates), {s: n for s, (_, n) in updates.items()}


def _close(result: dict, updates: dict, sites: list[str]) -> bool:
    expected = plain_mean({s: updates[s] for s in sites}, 4.0)
    return all(np.abs(result[k] - expected[k]).max() < 1e-5 for k in expected)


def test_add_refuses_wrong_dtype_names_shapes_duplicates_strangers_and_late_updates(swarm: Swarm) -> None:
    _, masked, committed = _round(swarm)
    a, b, c, d, e = swarm.sites
    um = unmasker(swarm, {s: committed[s] for s in (a, b, c, d)})
    um.add(a, masked[a])
    bad = [
        (b, {k: v.astype(np.int64) for k, v in masked[b].items()}, "dtype"),
        (b, {k: v for k, v in masked[b].items() if k != "scalar"}, "names"),
        (b, {**masked[b], "fc.weight": masked[b]["fc.weight"][:-1]}, "shape"),
        (a, masked[a], "duplicate"),
        (e, masked[e], "not_committed"),
    ]
    for site, tensors, reason in bad:
        with pytest.raises(BadUpdate) as err:
            um.add(site, tensors)
        assert err.value.reason == reason
    um.add(b, masked[b])
    um.requests(1, a)
    with pytest.raises(BadUpdate) as err:
        um.add(c, masked[c])
    assert err.value.reason == "late"
    assert (um.survivors, um.dropped, um.absent) == ([a, b], [c, d], [e])


def test_below_threshold_then_enough(swarm: Swarm) -> None:
    updates, masked, committed = _round(swarm)
    um = unmasker(swarm, committed)
    for s in swarm.sites:
        um.add(s, masked[s])
    requests = um.requests(1, swarm.sites[0])
    answer_all(swarm, um, requests, committed, swarm.sites[:2])  # 2 of 5 answer; 4 shares needed
    assert not um.ready and any("2/4 shares" in line for line in um.missing)
    with pytest.raises(BelowThreshold) as err:
        um.result()
    assert err.value.reason == "below_threshold" and err.value.missing == um.missing
    answer_all(swarm, um, requests, committed, swarm.sites[2:4])  # the sum was left intact
    assert um.ready and _close(um.result(), updates, swarm.sites)
    with pytest.raises(SecAggError) as err2:
        um.result()
    assert err2.value.reason == "consumed"


def test_a_new_leader_unmasks_with_fresh_requests(swarm: Swarm) -> None:
    updates, masked, committed = _round(swarm)
    first = unmasker(swarm, committed)
    for s in swarm.sites:
        first.add(s, masked[s])
    answer_all(swarm, first, first.requests(1, swarm.sites[0]), committed, swarm.sites[1:3])  # then it dies
    second = unmasker(swarm, committed)
    for s in swarm.sites:  # the committers resend their masked updates
        second.add(s, masked[s])
    assert not answer_all(swarm, second, second.requests(2, swarm.sites[1]), committed, swarm.sites)
    assert _close(second.result(), updates, swarm.sites)


def test_a_survivor_called_dropped_by_the_next_leader_cannot_be_unmasked(swarm: Swarm) -> None:
    _, masked, committed = _round(swarm)
    first = unmasker(swarm, committed)
    for s in swarm.sites:
        first.add(s, masked[s])
    answer_all(swarm, first, first.requests(1, swarm.sites[0]), committed, swarm.sites)
    second = unmasker(swarm, committed)
    for s in swarm.sites[1:]:  # the victim's masked update "did not arrive" at the second leader
        second.add(s, masked[s])
    refused = answer_all(swarm, second, second.requests(2, swarm.sites[1]), committed, swarm.sites)
    assert {e.reason for e in refused} == {"double_reveal"} and len(refused) == 4
    with pytest.raises(BelowThreshold):
        second.result()


def test_responses_are_checked(swarm: Swarm) -> None:
    _, masked, committed = _round(swarm)
    um = unmasker(swarm, committed)
    for s in swarm.sites[:4]:
        um.add(s, masked[s])
    reqs = um.requests(1, swarm.sites[0])
    j, k = swarm.sites[1], swarm.sites[2]
    raw = swarm.vaults[j].answer(swarm.secrets[j], reqs[j], committed, swarm.advertised, swarm.graph)
    extra = msgpack.unpackb(raw) | {"b": {**msgpack.unpackb(raw)["b"], swarm.sites[4]: bytes(66)}}
    cases = [
        (swarm.sites[4], raw, "unasked"),
        (k, raw, "binding"),
        (j, msgpack.packb(msgpack.unpackb(raw) | {"term": 2}), "binding"),
        (j, msgpack.packb(extra), "scope"),
        (j, b"\x00", "malformed"),
    ]
    for site, blob, reason in cases:
        with pytest.raises(BadResponse) as err:
            um.accept(site, blob)
        assert err.value.reason == reason
    um.accept(j, raw)
    with pytest.raises(BadResponse) as err:
        um.accept(j, raw)
    assert err.value.reason == "duplicate"
    assert um.refusals == {"unasked": 1, "binding": 2, "scope": 1, "malformed": 1, "duplicate": 1}


def test_a_lying_survivor_is_caught(swarm: Swarm) -> None:
    _, masked, committed = _round(swarm)
    um = unmasker(swarm, committed)
    for s in swarm.sites:
        um.add(s, masked[s])
    reqs = um.requests(1, swarm.sites[0])
    liar = swarm.sites[3]
    for j, req in reqs.items():
        raw = swarm.vaults[j].answer(swarm.secrets[j], req, committed, swarm.advertised, swarm.graph)
        if j == liar:
            body = msgpack.unpackb(raw)
            body["b"] = {p: (int.from_bytes(v, "big") + 1).to_bytes(66, "big") for p, v in body["b"].items()}
            raw = msgpack.packb(body)
        um.accept(j, raw)
    with pytest.raises(InconsistentShares):
        um.result()


def test_committed_samples_are_checked(swarm: Swarm) -> None:
    with pytest.raises(SecAggError) as err:
        Unmasker(7, swarm.params, swarm.advertised, swarm.graph, {swarm.sites[0]: 0})
    assert err.value.reason == "samples"
    with pytest.raises(SecAggError) as err:
        Unmasker(7, swarm.params, swarm.advertised, swarm.graph, {"0x" + "33" * 20: 5})
    assert err.value.reason == "unknown_site"


def test_terms_only_go_forward_and_samples_must_fit_the_bound(tmp_path: Path) -> None:
    swarm = make_swarm(tmp_path, 3, params=SecAggParams(sample_bound=100))
    rng = np.random.default_rng(3)
    updates = {s: (random_update(rng, 4.0), 40) for s in swarm.sites}
    um = unmasker(swarm, {s: 40 for s in swarm.sites})
    for s, m in masked_updates(swarm, updates).items():
        um.add(s, m)
    assert um.requests(2, swarm.sites[0]) == um.requests(2, swarm.sites[0])
    for term, leader in ((1, swarm.sites[0]), (2, swarm.sites[1])):
        with pytest.raises(SecAggError) as err:
            um.requests(term, leader)
        assert err.value.reason == "term"
    answer_all(swarm, um, um.requests(2, swarm.sites[0]), swarm.sites, swarm.sites)
    with pytest.raises(SecAggError) as err:  # 120 samples: the fixed-point sum may have wrapped
        um.result()
    assert err.value.reason == "sample_bound"
