"""The SCAFFOLD merge: FedAvg on the model's tensors, the unweighted mean on the reserved prefix, so
the merged model holds c + mean(delta c_i), in diff mode (after apply_diff) and in weights mode."""

from __future__ import annotations

import torch

from swarmd.merge import Update, apply_diff, rule_for
from swarmd.merge.scaffold import Scaffold
from swarmd.task import SCAFFOLD_PREFIX, SwarmSettings, WeightKind

C = SCAFFOLD_PREFIX + "w"


def _merge(rule, base, updates):
    rule.begin(base)
    for u in updates:
        rule.add(u)
    return rule.result()


def test_the_task_setting_picks_the_rule():
    assert isinstance(rule_for(SwarmSettings(scaffold=True)), Scaffold)
    assert not isinstance(rule_for(SwarmSettings()), Scaffold)


def test_diff_mode_moves_c_by_the_mean_delta_and_the_model_by_fedavg():
    base = {"w": torch.tensor([1.0, 2.0]), C: torch.tensor([0.5, -0.5])}
    ups = [
        Update("a", {"w": torch.tensor([1.0, 0.0]), C: torch.tensor([2.0, 0.0])}, 10),
        Update("b", {"w": torch.tensor([0.0, 1.0]), C: torch.tensor([0.0, 4.0])}, 30),
    ]
    merged = apply_diff(base, _merge(rule_for(SwarmSettings(scaffold=True, send=WeightKind.DIFF)), base, ups))
    torch.testing.assert_close(merged["w"], torch.tensor([1.0 + 0.25, 2.0 + 0.75]))  # 10:30 weights
    torch.testing.assert_close(merged[C], torch.tensor([0.5 + 1.0, -0.5 + 2.0]))  # unweighted mean


def test_weights_mode_carries_c_plus_delta_and_gives_the_same_c():
    base = {"w": torch.zeros(2), C: torch.tensor([0.5, -0.5])}
    deltas = [torch.tensor([2.0, 0.0]), torch.tensor([0.0, 4.0])]
    ups = [
        Update(s, {"w": torch.ones(2) * i, C: base[C] + d}, n)
        for i, (s, d, n) in enumerate(zip("ab", deltas, (10, 30), strict=True))
    ]
    merged = _merge(Scaffold(), base, ups)
    torch.testing.assert_close(merged["w"], torch.full((2,), 0.75))
    torch.testing.assert_close(merged[C], torch.tensor([1.5, 1.5]))
