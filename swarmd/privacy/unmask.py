"""The leader's side: sum the masked updates as they stream in, ask survivors for shares, remove masks.

Memory is one model of uint32 (the running sum mod 2^32) plus shares: O(sites) small state. S (survivors)
are the committers whose masked update was added, D (dropped) the other committers, X (absent) the
advertised sites that never committed. The sum carries sum_{i in S} PRG(b_i), and for every edge between
S and D or X the survivor's pair mask; edges inside S cancel. Unmasking rebuilds each b_i (i in S) and
each c_sk_i (i in D) from t shares, derives the S-X pair seeds from the absent site's rebuilt mask key
where its shares allow (else takes them from the survivors themselves), subtracts, decodes and divides
by the survivors' samples: the FedAvg mean of S. Nothing touches the sum until every secret is in hand.
What it used is kept as `transcript` (`swarmd.privacy.transcript`), from which an auditor redoes it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from swarmd.privacy import shamir
from swarmd.privacy.errors import (
    BadResponse,
    BadUpdate,
    BelowThreshold,
    InconsistentShares,
    SecAggError,
    counted,
)
from swarmd.privacy.keys import public_of
from swarmd.privacy.masks import apply_masks, decode
from swarmd.privacy.params import Advertised, SecAggParams, site_id
from swarmd.privacy.transcript import UNBOUND, UnmaskTranscript, absent_edges, masks_of
from swarmd.privacy.view import RoundView
from swarmd.privacy.wire import RevealRequest, RevealResponse


class Unmasker:
    """One leader term's unmasking of `round`. `committed`: site -> n_samples of the round's commits.
    `refusals` counts the updates and responses it refused, by reason."""

    def __init__(
        self,
        round: int,
        params: SecAggParams,
        advertised: Sequence[Advertised],
        graph: Mapping[str, Sequence[str]],
        committed: Mapping[str, int],
    ) -> None:
        self.round = round
        self.params = params
        self.view = RoundView.of(round, advertised, graph)
        self.committed = {site_id(s): n for s, n in committed.items()}
        for s, n in self.committed.items():
            self.view.require(s, "committer")
            if type(n) is not int or not 1 <= n <= params.sample_bound:
                raise SecAggError(
                    "samples", f"{s} committed {n!r} samples, outside [1, {params.sample_bound}]"
                )
        self._sum: dict[str, np.ndarray] | None = None
        self._added: set[str] = set()
        self._requests: dict[str, RevealRequest] = {}
        self._term: int | None = None
        self._leader = ""
        self._b: dict[str, dict[int, int]] = {}  # survivor i -> {x: share of b_i}
        self._c: dict[str, dict[int, int]] = {}  # dropped i -> {x: share of c_sk_i}
        self._pairs: dict[tuple[str, str], bytes] = {}  # (survivor, absent) -> pair seed
        self._answered: set[str] = set()
        self._done = False
        self.transcript: UnmaskTranscript | None = None  # what `result` used, for an audit
        self.refusals: Counter[str] = Counter()

    # --- sets -----------------------------------------------------------------------------------
    @property
    def survivors(self) -> list[str]:
        return sorted(self._added)

    @property
    def dropped(self) -> list[str]:
        return sorted(set(self.committed) - self._added)

    @property
    def absent(self) -> list[str]:
        return sorted(set(self.view.keys) - set(self.committed))

    # --- masked updates -------------------------------------------------------------------------
    @counted
    def add(self, site: str, tensors: Mapping[str, np.ndarray]) -> None:
        """Fold one committer's masked update into the sum (mod 2^32). Refused after `requests`."""
        site = site_id(site)
        if self._requests:
            raise BadUpdate("late", f"{site}'s update arrived after unmasking began; excluded this round")
        if site not in self.committed:
            raise BadUpdate("not_committed", f"{site} did not commit in round {self.round}")
        if site in self._added:
            raise BadUpdate("duplicate", f"a second masked update from {site}")
        self._check(site, tensors)
        if self._sum is None:
            self._sum = {name: np.array(t, dtype=np.uint32, order="C") for name, t in tensors.items()}
        else:
            for name, acc in self._sum.items():
                np.add(acc, tensors[name], out=acc)
        self._added.add(site)

    def _check(self, site: str, tensors: Mapping[str, np.ndarray]) -> None:
        for name, t in tensors.items():
            if not isinstance(name, str) or not isinstance(t, np.ndarray) or t.dtype != np.uint32:
                raise BadUpdate("dtype", f"{site}: masked tensor {name!r} must be a uint32 array")
        if self._sum is not None:
            if set(tensors) != set(self._sum):
                raise BadUpdate("names", f"{site}: tensor names differ from the first update's")
            for name, acc in self._sum.items():
                if tensors[name].shape != acc.shape:
                    raise BadUpdate(
                        "shape", f"{site}: {name} has shape {tensors[name].shape}, want {acc.shape}"
                    )

    # --- requests and responses -----------------------------------------------------------------
    def requests(self, term: int, leader: str) -> dict[str, bytes]:
        """survivor -> RevealRequest: exactly the shares and pair seeds the unmasking needs from it.
        A later call with a higher term starts over (fresh requests, responses of the old term dropped)."""
        leader = site_id(leader)
        if type(term) is not int or term < 0:
            raise SecAggError("term", f"term must be an int >= 0, got {term!r}")
        if self._term is not None and term < self._term:
            raise SecAggError("term", f"term {term} is older than term {self._term}")
        if self._term == term and self._leader != leader:
            raise SecAggError("term", f"term {term} belongs to {self._leader}, not {leader}")
        if not self._added:
            raise BelowThreshold(["no masked update arrived"])
        if self._term != term:
            self._term, self._leader = term, leader
            self._b, self._c, self._pairs, self._answered = {}, {}, {}, set()
            S, D, X = set(self.survivors), set(self.dropped), set(self.absent)
            self._requests = {}
            for j in self.survivors:
                mine, others = set(self.view.holders(j)), set(self.view.graph[j])
                asks = (tuple(sorted(mine & S)), tuple(sorted(others & (D | X))), tuple(sorted(others & X)))
                self._requests[j] = RevealRequest(
                    self.round, term, leader, j, tuple(self.survivors), tuple(self.dropped), *asks
                )
        return {j: r.to_bytes() for j, r in self._requests.items()}

    @counted
    def accept(self, site: str, response: bytes) -> None:
        """Take one survivor's RevealResponse (site: the transport's authenticated peer)."""
        site = site_id(site)
        req = self._requests.get(site)
        if req is None:
            raise BadResponse("unasked", f"no request was sent to {site}")
        resp = RevealResponse.from_bytes(response, BadResponse)
        if (resp.round, resp.term, resp.leader, resp.sender) != (req.round, req.term, req.leader, site):
            raise BadResponse("binding", f"response from {site} is for another round, term, leader or sender")
        if site in self._answered:
            raise BadResponse("duplicate", f"a second response from {site} in term {req.term}")
        if not set(resp.b) <= set(req.b) or not set(resp.c) <= set(req.c) or set(resp.pair) != set(req.pair):
            raise BadResponse("scope", f"{site} answered other than what was asked")
        try:
            b = {p: shamir.from_bytes(v) for p, v in resp.b.items()}
            c = {p: shamir.from_bytes(v) for p, v in resp.c.items()}
        except ValueError as exc:
            raise BadResponse("malformed", f"{site}: {exc}") from None
        x = self.view.x(site)
        for p, y in b.items():
            self._b.setdefault(p, {})[x] = y
        for p, y in c.items():
            self._c.setdefault(p, {})[x] = y
        for p, seed in resp.pair.items():
            self._pairs[(site, p)] = seed
        self._answered.add(site)

    # --- unmasking ------------------------------------------------------------------------------
    @property
    def missing(self) -> list[str]:
        """What is still short, one line per secret (empty when ready)."""
        out: list[str] = []
        if not self._requests:
            return ["no reveal requests sent yet"]
        for kind, owners, got in (("b", self.survivors, self._b), ("c_sk", self.dropped, self._c)):
            for i in owners:
                have, t = len(got.get(i, {})), self.view.threshold(i, self.params)
                if have < t:
                    out.append(f"{kind} of {i}: {have}/{t} shares")
        for j, x in self._absent_edges():
            if j not in self._answered and len(self._c.get(x, {})) < self.view.threshold(x, self.params):
                out.append(
                    f"pair seed of {j} with absent {x}: {j} is silent and {x}'s key has too few shares"
                )
        return out

    def _absent_edges(self) -> list[tuple[str, str]]:
        """(survivor j, absent x) for every edge whose mask j added and no x ever cancels."""
        return absent_edges(self.view, self.survivors, set(self.absent))

    @property
    def ready(self) -> bool:
        return not self.missing

    def _used(self) -> UnmaskTranscript:
        """The secrets the unmasking uses, as a transcript (bound to no model yet). Raises before the sum
        is touched. An absent site's key is rebuilt where its shares allow (then its pair masks follow
        from it, checkable against the chain); else the survivors' own pair seeds stand for it."""
        if self.missing:
            raise BelowThreshold(self.missing)
        b = {i: shamir.combine(self._b[i], self.view.threshold(i, self.params)) for i in self.survivors}
        keys = {i: self._mask_key(i) for i in self.dropped}
        pairs: dict[str, dict[str, bytes]] = {}
        bad: dict[str, InconsistentShares] = {}
        for x in self.absent:
            try:
                keys[x] = self._mask_key(x)
            except KeyError:  # too few shares: the survivors' pair seeds must do
                pass
            except InconsistentShares as exc:
                bad[x] = exc
        for j, x in self._absent_edges():
            if x not in keys:
                if (j, x) not in self._pairs:  # j is silent: only x's key could stand for its seed
                    raise bad[x]
                pairs.setdefault(j, {})[x] = self._pairs[(j, x)]
        leader, term = self._leader, self._term if self._term is not None else 0
        return UnmaskTranscript(
            self.round, term, leader, UNBOUND, tuple(self.survivors), tuple(self.dropped), b, keys, pairs
        )

    def _mask_key(self, site: str) -> bytes:
        """c_sk of a dropped or absent site from its shares, checked against its advertised public key."""
        t = self.view.threshold(site, self.params)
        if len(self._c.get(site, {})) < t:
            raise KeyError(site)
        c_sk = shamir.combine(self._c[site], t)
        if public_of(c_sk) != self.view.keys[site].mask_pk:
            raise InconsistentShares("inconsistent", f"rebuilt mask key of {site} does not match the chain's")
        return c_sk

    def result(self) -> dict[str, np.ndarray]:
        """float32 FedAvg mean over the survivors: sum(n_i x_i) / sum(n_i). Consumes the sum."""
        if self._done or self._sum is None:
            raise SecAggError("consumed", "no sum to unmask (nothing added, or result() already ran)")
        n_total = sum(self.committed[i] for i in self._added)
        if n_total > self.params.sample_bound:
            raise SecAggError(
                "sample_bound", f"survivors hold {n_total} samples, above {self.params.sample_bound}"
            )
        used = self._used()
        total, self._sum, self._done = self._sum, None, True
        apply_masks(total, masks_of(used, self.view))
        self.transcript = used
        return {name: decode(t, n_total, self.params) for name, t in total.items()}
