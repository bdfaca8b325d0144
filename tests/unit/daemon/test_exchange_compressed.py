"""The leader's exchange with compressed updates, from a real checkpoint store: each stored update is
decoded into the rule tensor by tensor (fedavg) or a slice at a time (median), never whole; the merge
equals the merge of the decoded updates bit for bit; a malformed or mis-declared update is excluded as
"compression" and reported FAILED_VALIDATION, while the honest ones still merge."""

from __future__ import annotations

import pytest
import torch

from swarmd.checkpoint import CheckpointStore
from swarmd.checkpoint_reader import StoredState
from swarmd.codec import content_hash
from swarmd.compress import ENCODING_KEY, SCALE_PREFIX, Encoding, compress, decompressed
from swarmd.daemon.accounting import exclusion_reason
from swarmd.daemon.exchange import Exchange
from swarmd.errors import UpdateRejected
from swarmd.ledger import Outcome
from swarmd.merge import Update, apply_diff, get_rule

SITES = tuple("0x" + c * 40 for c in "abc")


def _round(enc: Encoding) -> tuple[dict[str, torch.Tensor], dict[str, dict[str, torch.Tensor]]]:
    g = torch.Generator().manual_seed(3)
    base = {
        "big": torch.randn(70_000, generator=g),
        "small": torch.randn(3, 4, generator=g),
        "n": torch.tensor(7),
    }
    ups = {}
    for site in SITES:
        diff = {k: 0.01 * torch.randn(v.shape, generator=g) for k, v in base.items() if v.is_floating_point()}
        ups[site] = compress({**diff, "n": torch.tensor(2)}, enc)[0]
    return base, ups


def _exchange(rule: str, enc: Encoding, base, ups) -> Exchange:
    return Exchange(
        round=1,
        term=1,
        expected={s: (content_hash(u), 10 + i) for i, (s, u) in enumerate(ups.items())},
        base=base,
        rule=get_rule(rule),
        is_diff=True,
        encoding=enc,
    )


@pytest.mark.parametrize(
    ("rule", "mode"), [("fedavg", "int8"), ("fedavg", "topk"), ("median", "int8"), ("fedavg", "bf16")]
)
def test_stored_compressed_updates_decode_into_the_rule_and_match_the_decoded_merge(
    rule, mode, tmp_path, monkeypatch
):
    enc = Encoding(mode, topk_ratio=0.02)
    base, ups = _round(enc)
    store = CheckpointStore(tmp_path)
    for state in ups.values():
        store.put(state)
    want_rule = get_rule(rule)  # the reference: the same rule over the decoded updates, in memory
    want_rule.begin(base)
    for i, (site, u) in enumerate(ups.items()):
        want_rule.add(Update(site, {k: v.clone() for k, v in decompressed(u, base, enc).items()}, 10 + i))
    want = apply_diff(base, want_rule.result())

    whole: list[str] = []
    real = StoredState.__getitem__

    def counting(self, name):
        whole.append(name)
        return real(self, name)

    ex = _exchange(rule, enc, base, ups)
    for site, state in ups.items():
        ex.offer(site, state, content_hash(state))
    monkeypatch.setattr(StoredState, "__getitem__", counting)
    ex.fold(store.open)
    got, included = ex.result()
    assert included == list(SITES) and content_hash(got) == content_hash(want)
    if rule == "median":  # slices only, never a whole tensor (the few bytes declaring the encoding aside)
        assert set(whole) == {ENCODING_KEY}
    else:  # one tensor (and its side tensors) at a time; never the encoding read twice per tensor
        assert len(whole) <= len(SITES) * (2 * len(base) + 1)


def test_a_malformed_or_misdeclared_update_is_excluded_and_the_rest_merge():
    enc = Encoding("int8")
    base, ups = _round(enc)
    bad = dict(ups[SITES[1]])
    bad[SCALE_PREFIX + "big"] = -bad[SCALE_PREFIX + "big"]
    other = compress({k: torch.zeros_like(v) for k, v in base.items()}, Encoding("bf16"))[0]
    ups = {SITES[0]: ups[SITES[0]], SITES[1]: bad, SITES[2]: other}
    ex = _exchange("fedavg", enc, base, ups)
    ex.offer(SITES[0], ups[SITES[0]], content_hash(ups[SITES[0]]))
    with pytest.raises(UpdateRejected, match="scales must be finite and >= 0"):
        ex.offer(SITES[1], bad, content_hash(bad))
    with pytest.raises(UpdateRejected, match="declares encoding b'bf16', the task says 'int8;block=256'"):
        ex.offer(SITES[2], other, content_hash(other))
    assert ex.excluded == {SITES[1]: "compression", SITES[2]: "compression"} and ex.complete.is_set()
    assert exclusion_reason("compression") is Outcome.FAILED_VALIDATION
    ex.fold({content_hash(ups[SITES[0]]): ups[SITES[0]]}.__getitem__)
    assert ex.result()[1] == [SITES[0]]
