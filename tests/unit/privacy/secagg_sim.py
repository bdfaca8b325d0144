"""A whole secure-aggregation round in one process: sites with vaults, the leader's Unmasker, dropouts.

Keys come from a seeded generator, so masked payloads are reproducible; Shamir coefficients and AEAD
nonces still come from the OS (they change no masked byte). Messages move as the bytes the daemon moves.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from swarmd.privacy import (
    Advertised,
    RoundSecrets,
    SecAggError,
    SecAggParams,
    ShareVault,
    Unmasker,
    make_shares,
    mask_update,
    neighbourhood,
)

ROUND = 7
SEED = hashlib.sha256(b"test graph seed").digest()


def address(i: int) -> str:
    raw = hashlib.sha256(f"site {i}".encode()).hexdigest()[:40]
    return "0x" + (raw.upper() if i % 2 else raw)  # mixed case: every entry point must normalise


@dataclass
class Swarm:
    params: SecAggParams
    secrets: dict[str, RoundSecrets]
    advertised: list[Advertised]
    graph: dict[str, list[str]]
    vaults: dict[str, ShareVault]

    @property
    def sites(self) -> list[str]:
        return sorted(self.secrets)

    def vault_dir(self, site: str) -> Path:
        return self.vaults[site].directory


def make_swarm(
    tmp: Path, n: int, k: int = 0, *, params: SecAggParams | None = None, key_seed: int = 0
) -> Swarm:
    rng = np.random.default_rng(key_seed)
    secrets = {}
    for i in range(n):
        keys = [rng.bytes(32) for _ in range(3)]
        s = RoundSecrets(ROUND, address(i), *keys)
        secrets[s.owner] = s
    advertised = [Advertised(s.owner, *s.public) for s in secrets.values()]
    graph = neighbourhood(advertised, SEED, k)
    vaults = {site: ShareVault(tmp / site) for site in secrets}
    swarm = Swarm(params or SecAggParams(), secrets, advertised, graph, vaults)
    for site, s in secrets.items():
        for holder, blob in make_shares(s, advertised, graph, swarm.params).items():
            vaults[holder].accept(secrets[holder], site, blob, advertised, graph)
    return swarm


def random_update(rng: np.random.Generator, clip: float, spill: float = 1.1) -> dict[str, np.ndarray]:
    shapes = {"conv.weight": (3, 4, 5), "conv.bias": (7,), "fc.weight": (33,), "scalar": ()}
    return {k: rng.uniform(-spill * clip, spill * clip, size=v).astype(np.float32) for k, v in shapes.items()}


def masked_updates(
    swarm: Swarm, updates: Mapping[str, tuple[dict[str, np.ndarray], int]]
) -> dict[str, dict[str, np.ndarray]]:
    return {
        s: mask_update(swarm.secrets[s], swarm.advertised, swarm.graph, x, n, swarm.params)
        for s, (x, n) in updates.items()
    }


def unmasker(swarm: Swarm, committed: Mapping[str, int]) -> Unmasker:
    return Unmasker(ROUND, swarm.params, swarm.advertised, swarm.graph, committed)


def answer_all(
    swarm: Swarm,
    um: Unmasker,
    requests: Mapping[str, bytes],
    committed: Collection[str],
    responders: Collection[str],
) -> list[SecAggError]:
    """Each responding survivor answers from its vault; refusals are returned, not raised."""
    refused = []
    for j, req in requests.items():
        if j not in responders:
            continue
        try:
            um.accept(
                j, swarm.vaults[j].answer(swarm.secrets[j], req, committed, swarm.advertised, swarm.graph)
            )
        except SecAggError as exc:
            refused.append(exc)
    return refused


def plain_mean(
    updates: Mapping[str, tuple[dict[str, np.ndarray], int]], clip: float
) -> dict[str, np.ndarray]:
    total = sum(n for _, n in updates.values())
    names = next(iter(updates.values()))[0]
    return {
        k: sum(n * np.clip(x[k].astype(np.float64), -clip, clip) for x, n in updates.values()) / total
        for k in names
    }
