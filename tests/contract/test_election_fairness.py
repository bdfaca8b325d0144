"""Leadership is uniform: many commit-reveal rounds on a real anvil, and a chi-square goodness-of-fit test
of who led against the uniform distribution over the revealers.

4 sites commit and reveal in each of ROUNDS rounds; every site reveals, so each round draws among all four.
The secrets come from a seeded generator, so the counts (and the verdict) are the same on every run: the
test cannot flake, and a change to the draw that biases it shows as a failure. H0 (uniform) is rejected at
significance ALPHA = 0.001 (chi-square with 3 degrees of freedom, critical value 16.27); the test also
checks that no site leads more than twice its fair share. About 20 s on one core."""

from __future__ import annotations

import random

import pytest
from chainkit import deploy_consortium, h32
from eth_account.signers.local import LocalAccount
from scipy.stats import chisquare

from swarmd.ledger import Devnet, Outcome
from swarmd.ledger.receipt import election_seal

pytestmark = [pytest.mark.chain, pytest.mark.slow, pytest.mark.long]

SITES, ROUNDS, ALPHA = 4, 120, 0.001


def test_leadership_is_uniform_over_many_rounds(devnet: Devnet, accounts: list[LocalAccount]) -> None:
    c = deploy_consortium(devnet, accounts, sites=SITES, min_peers=2, commit_window=50)
    rng = random.Random(17)
    led = dict.fromkeys((str(s.sender) for s in c.sites), 0)
    for r in range(ROUNDS):
        secrets = {}
        for i, site in enumerate(c.sites):
            secrets[site] = rng.randbytes(32)
            site.commit(r, h32(f"u{r}-{i}"), 1, seal=election_seal(secrets[site], str(site.sender), r))
        for site, secret in secrets.items():
            site.reveal(r, secret)
        c.admin.elect(r)
        leader = c.admin.round(r).leader
        assert leader is not None
        led[leader] += 1
        c.site(leader).finalize(r, h32(f"m{r}"), dict.fromkeys(led, Outcome.INCLUDED))
    counts = list(led.values())
    assert sum(counts) == ROUNDS
    stat, p = chisquare(counts)  # expected: ROUNDS / SITES each
    print(f"leaders per site {counts}, chi2 {stat:.2f}, p {p:.3f}")
    assert p > ALPHA, f"leadership is not uniform: {counts} (chi2 {stat:.2f}, p {p:.4f})"
    assert max(counts) <= 2 * ROUNDS / SITES
