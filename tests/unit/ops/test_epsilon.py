"""Epsilon read back from rounds as the chain returns them: the per-round points (frozen when a site stops),
and the largest epsilon behind a merged model (its whole ancestry, abandoned rounds and dropouts excluded)."""

from __future__ import annotations

from pathlib import Path

from swarmd.ledger import CommitInfo, RoundInfo, RoundStatus
from swarmd.ops.epsilon import epsilon_points, model_epsilon, plot_epsilon

A, B, C = ("0x" + c * 40 for c in "abc")


def _round(r: int, commits: dict[str, int], included=(), status=RoundStatus.FINALIZED, recovered=()):
    infos = tuple(
        CommitInfo(s, bytes([i + 1]) * 32, 10, 100 * r + i, e) for i, (s, e) in enumerate(commits.items())
    )
    return RoundInfo(
        r, status, 1, A, infos, (), b"\1" * 32, b"\2" * 32, tuple(included), 0, None, None, None,
        recovered=tuple(recovered), key_count=len(recovered),
    )  # fmt: skip


def test_points_carry_a_stopped_sites_epsilon_and_skip_sites_without_dp() -> None:
    rounds = [
        _round(0, {A: 1000, C: 0}),
        _round(1, {A: 2000, B: 500}),
        _round(2, {B: 900}),
        _round(3, {}, status=RoundStatus.OPEN),  # no commits yet: no row
    ]
    got = [(p.round, p.site, p.epsilon, p.committed) for p in epsilon_points(rounds)]
    assert got == [
        (0, A, 1.0, True),
        (1, A, 2.0, True),
        (1, B, 0.5, True),
        (2, A, 2.0, False),
        (2, B, 0.9, True),
    ]
    assert epsilon_points([]) == []


def test_model_epsilon_spans_the_ancestry_and_skips_dropouts_and_abandoned_rounds() -> None:
    rounds = [
        _round(0, {A: 1000, B: 400, C: 0}, included=(A, B, C)),
        _round(1, {A: 3000, B: 800}, included=(B,), recovered=(A,)),  # A's round-1 input is not in the sum
        _round(2, {B: 9000}, included=(), status=RoundStatus.ABANDONED),  # no model came out of it
    ]
    m = model_epsilon(rounds, 1)
    assert (m.epsilon, m.site) == (1.0, A)  # A contributed through round 0's model
    assert m.contributors == (A, B, C) and m.without_dp == (C,)
    assert model_epsilon(rounds, 2).epsilon == 1.0
    assert model_epsilon(rounds, 0).to_json()["max_epsilon"] == 1.0
    plain = model_epsilon([_round(0, {A: 0}, included=(A,))], 0)
    assert plain.epsilon is None and plain.site is None and plain.without_dp == (A,)


def test_plot_is_a_png_even_with_nothing_to_plot(tmp_path: Path) -> None:
    for name, rounds in (("some", [_round(0, {A: 1000}), _round(1, {B: 10})]), ("none", [])):
        out = plot_epsilon(epsilon_points(rounds), tmp_path / f"{name}.png")
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
