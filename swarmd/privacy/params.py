"""Who masks with whom: the round's parameters, the advertised key set, the SecAgg+ graph, thresholds.

Every site computes the same graph from the same chain facts (the advertised set, the round's seed, k),
so no message is needed to agree on it. The graph is a random Harary graph (Bell et al. 2020): the sites
in a seeded random order on a ring, each joined to its k/2 nearest on either side (and, for odd k, the
site opposite), which is k-regular (or nearly) and k-connected.
"""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from swarmd.privacy.errors import SecAggError

KEY_SIZE = 32
GRAPH_DOMAIN = b"swarmd-secagg-graph"
VIEW_DOMAIN = b"swarmd-secagg-view"
MAX_SITES = 1024
_ADDRESS = re.compile(r"0x[0-9a-fA-F]{40}")


class _PrivacyLike(Protocol):
    @property
    def threshold(self) -> int: ...

    @property
    def neighbours(self) -> int: ...

    @property
    def clip_range(self) -> float: ...

    @property
    def sample_bound(self) -> int: ...


def site_id(address: object) -> str:
    """The lowercase `0x` form of an account address; SecAggError("address") for anything else."""
    if not isinstance(address, str) or not _ADDRESS.fullmatch(address):
        raise SecAggError("address", f"not a 0x address: {str(address)[:60]!r}")
    return address.lower()


def site_bytes(site: str) -> bytes:
    """The 20 raw bytes of a (normalised) address, as they enter key derivations."""
    return bytes.fromhex(site[2:])


@dataclass(frozen=True)
class SecAggParams:
    """`[privacy]` settings secure aggregation uses. Fixed point: scale = (2^31 - 1) / (clip * bound)."""

    threshold: int = 0  # 0: ceil(2d/3) for a site with d neighbours
    neighbours: int = 0  # 0: complete graph
    clip_range: float = 4.0
    sample_bound: int = 1 << 16

    def __post_init__(self) -> None:
        if self.threshold < 0 or self.neighbours < 0:
            raise SecAggError("params", "threshold and neighbours must be >= 0")
        if not (math.isfinite(self.clip_range) and self.clip_range > 0.0):
            raise SecAggError("params", f"clip_range must be finite and > 0, got {self.clip_range}")
        if not 1 <= self.sample_bound <= 1 << 24:
            raise SecAggError("params", f"sample_bound must be in [1, 2**24], got {self.sample_bound}")

    @classmethod
    def from_settings(cls, p: _PrivacyLike) -> SecAggParams:
        return cls(p.threshold, p.neighbours, float(p.clip_range), p.sample_bound)

    @property
    def scale(self) -> float:
        """Fixed-point units per unit of update: a sum of up to `sample_bound` samples cannot wrap."""
        return float((1 << 31) - 1) / (self.clip_range * self.sample_bound)


def threshold_for(params: SecAggParams, d: int) -> int:
    """Shares needed to rebuild the secrets of a site with `d` neighbours (d + 1 holders: it keeps one).

    The setting if given, else max(ceil(2d/3), d // 2 + 2); at most d (its neighbours alone must rebuild
    a dropped site's mask key) and at least 1. The d // 2 + 2 term: a leader holds a share of each of
    its neighbours' secrets and may tell different holders different survivor sets, collecting b-shares
    from some and c_sk-shares from the others; from d + 1 holders, itself one of them, it can get t of
    both only if 2t <= d + 2. So the default keeps 2t > d + 2 wherever t <= d allows (every d >= 3)."""
    t = params.threshold if params.threshold > 0 else max(-(-2 * d // 3), d // 2 + 2)
    return max(1, min(t, d))


@dataclass(frozen=True)
class Advertised:
    """One site's round keys, as the chain's KeysAdvertised event carries them."""

    site: str
    mask_pk: bytes
    enc_pk: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "site", site_id(self.site))
        for name in ("mask_pk", "enc_pk"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != KEY_SIZE:
                raise SecAggError("key", f"{self.site}: {name} must be {KEY_SIZE} bytes")
            object.__setattr__(self, name, bytes(value))  # plain bytes, whatever subclass the chain gave


def by_site(advertised: Sequence[Advertised]) -> dict[str, Advertised]:
    """The advertised set keyed by site, sorted by address; refuses duplicates and oversized sets."""
    if len(advertised) > MAX_SITES:
        raise SecAggError("sites", f"{len(advertised)} advertised sites, at most {MAX_SITES}")
    out: dict[str, Advertised] = {}
    for a in sorted(advertised, key=lambda a: a.site):
        if a.site in out:
            raise SecAggError("duplicate_site", f"{a.site} advertised twice")
        out[a.site] = a
    return out


def graph_seed(round_: int, previous_model: bytes) -> bytes:
    """The round's graph seed: sha256(domain | round | hash of the previous merged model, from the chain)."""
    return hashlib.sha256(GRAPH_DOMAIN + round_.to_bytes(8, "big") + previous_model).digest()


def neighbourhood(advertised: Sequence[Advertised], seed: bytes, k: int) -> dict[str, list[str]]:
    """Symmetric graph on the advertised sites: site -> sorted neighbours. k = 0 (or k >= n - 1): complete.
    k = 1 would be a matching (pairs' sums leak), so it counts as 2."""
    sites = list(by_site(advertised))
    n = len(sites)
    if k == 0 or k >= n - 1:
        return {s: [o for o in sites if o != s] for s in sites}
    k = max(k, 2)
    ring = sorted(sites, key=lambda s: hashlib.sha256(seed + site_bytes(s)).digest())
    edges: set[tuple[int, int]] = set()
    for p in range(n):
        for off in range(1, k // 2 + 1):
            edges.add((p, (p + off) % n))
        if k % 2:
            edges.add((p, (p + n // 2) % n))
    graph: dict[str, set[str]] = {s: set() for s in sites}
    for a, b in edges:
        graph[ring[a]].add(ring[b])
        graph[ring[b]].add(ring[a])
    return {s: sorted(graph[s]) for s in sites}


def check_graph(graph: Mapping[str, Sequence[str]], sites: Sequence[str]) -> None:
    """The graph must cover exactly the advertised sites and be symmetric without self-loops."""
    if set(graph) != set(sites):
        raise SecAggError("graph", "graph does not cover exactly the advertised sites")
    for s, ns in graph.items():
        for o in ns:
            if o == s or o not in graph or s not in graph[o]:
                raise SecAggError("graph", f"graph edge {s} - {o} is not symmetric")


def connected(graph: Mapping[str, Sequence[str]], within: set[str]) -> bool:
    """Whether the sites `within` form one component of the graph restricted to them."""
    if not within:
        return False
    start = min(within)
    seen, todo = {start}, [start]
    while todo:
        for o in graph[todo.pop()]:
            if o in within and o not in seen:
                seen.add(o)
                todo.append(o)
    return seen == within


def view_digest(
    round_: int, advertised: Mapping[str, Advertised], graph: Mapping[str, Sequence[str]]
) -> bytes:
    """Names one site's view of the round (keys and graph); shares are only valid within the same view."""
    h = hashlib.sha256(VIEW_DOMAIN + round_.to_bytes(8, "big"))
    for site, a in advertised.items():
        h.update(site_bytes(site) + a.mask_pk + a.enc_pk)
        h.update(len(graph[site]).to_bytes(4, "big") + b"".join(site_bytes(o) for o in graph[site]))
    return h.digest()
