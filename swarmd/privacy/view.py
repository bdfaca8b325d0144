"""One party's validated view of a round: the advertised keys, the graph, share holders and x-coordinates.

Everything the site, the vault and the leader derive from the chain facts (who advertised which keys,
the graph) goes through here once, so the three agree by construction: holders of site i's shares are
i and its neighbours; holder j's x-coordinate is 1 + j's position among the advertised sites by address.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from swarmd.privacy.errors import SecAggError
from swarmd.privacy.params import Advertised, SecAggParams, by_site, check_graph, threshold_for, view_digest


@dataclass(frozen=True)
class RoundView:
    round: int
    keys: dict[str, Advertised]
    graph: dict[str, list[str]]
    digest: bytes = field(repr=False)
    _x: dict[str, int] = field(repr=False)

    @classmethod
    def of(
        cls, round_: int, advertised: Sequence[Advertised], graph: Mapping[str, Sequence[str]]
    ) -> RoundView:
        keys = by_site(advertised)
        check_graph(graph, list(keys))
        g = {s: sorted(graph[s]) for s in keys}
        return cls(round_, keys, g, view_digest(round_, keys, g), {s: i + 1 for i, s in enumerate(keys)})

    @property
    def sites(self) -> list[str]:
        return list(self.keys)

    def x(self, site: str) -> int:
        return self._x[site]

    def holders(self, site: str) -> list[str]:
        """Who holds shares of `site`'s secrets: the site itself and its neighbours, sorted."""
        return sorted([site, *self.graph[site]])

    def threshold(self, site: str, params: SecAggParams) -> int:
        return threshold_for(params, len(self.graph[site]))

    def require(self, site: str, what: str, err: type[SecAggError] = SecAggError) -> None:
        if site not in self.keys:
            raise err("unknown_site", f"{what} {site} did not advertise keys in round {self.round}")
