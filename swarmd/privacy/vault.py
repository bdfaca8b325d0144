"""The share holder's vault: the shares a site holds for its neighbours, and the guard on revealing them.

`accept` decrypts and checks a neighbour's share message and stores it. `answer` serves a leader's reveal
request under the one rule that keeps every update secret: for one peer in one round, reveal the share of
its self-mask seed b OR of its mask key c_sk, never both (whatever the term or leader; a bound leader's
own secrets excepted: it holds them anyway); and reveal a pair seed only with a site that never committed.
The record of what was revealed is written to disk (atomic, fsync) BEFORE the answer leaves, so a restart
cannot forget it. A round's file that cannot be read fails closed. Every refusal raises a named error, is
logged and counted in `refusals` by reason.
"""

from __future__ import annotations

import hashlib
import os
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from swarmd.fsutil import atomic_write, store_error
from swarmd.privacy.errors import (
    BadRequest,
    BadShare,
    BadVaultState,
    DoubleReveal,
    ReplayedRequest,
    counted,
)
from swarmd.privacy.keys import RoundSecrets, pair_seed, share_key
from swarmd.privacy.params import Advertised, connected, site_id
from swarmd.privacy.site import own_view
from swarmd.privacy.view import RoundView
from swarmd.privacy.wire import RevealRequest, RevealResponse, ShareMsg, unpack_shares

_MAX_FILE = 16 << 20


@dataclass
class _Held:
    x: int
    b: bytes
    c: bytes
    view: bytes


@dataclass
class _RoundState:
    owner: str
    shares: dict[str, _Held] = field(default_factory=dict)
    reveals: dict[str, str] = field(default_factory=dict)  # peer -> "b" | "c"
    terms: list[tuple[int, str, bytes]] = field(default_factory=list)  # (term, leader, request digest)

    def to_bytes(self, round_: int) -> bytes:
        shares = {s: [h.x, h.b, h.c, h.view] for s, h in self.shares.items()}
        body = {"v": 1, "round": round_, "owner": self.owner, "shares": shares, "reveals": self.reveals}
        return msgpack.packb(body | {"terms": [list(t) for t in self.terms]}, use_bin_type=True)

    @classmethod
    def from_bytes(cls, raw: bytes, round_: int) -> _RoundState:
        o: Any = msgpack.unpackb(raw, raw=False, strict_map_key=True)
        if not isinstance(o, dict) or o.get("v") != 1 or o.get("round") != round_:
            raise ValueError("not a version-1 vault file of this round")
        state = cls(site_id(o["owner"]))
        for s, (x, b, c, view) in o["shares"].items():
            if not all(type(v) is bytes for v in (b, c, view)) or type(x) is not int:
                raise ValueError("bad share record")
            state.shares[site_id(s)] = _Held(x, b, c, view)
        for s, kind in o["reveals"].items():
            if kind not in ("b", "c"):
                raise ValueError("bad reveal record")
            state.reveals[site_id(s)] = kind
        for term, leader, digest in o["terms"]:
            if type(term) is not int or type(digest) is not bytes:
                raise ValueError("bad term record")
            state.terms.append((term, site_id(leader), digest))
        return state


class ShareVault:
    """A site's store of its neighbours' shares, one file per round under `directory` (mode 0600)."""

    def __init__(self, directory: str | os.PathLike[str]) -> None:
        self.directory = Path(directory)
        try:
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        except OSError as exc:
            raise store_error(self.directory, exc) from exc
        self.refusals: Counter[str] = Counter()
        self._rounds: dict[int, _RoundState] = {}

    def _path(self, round_: int) -> Path:
        return self.directory / f"round-{round_:012d}.msgpack"

    def _state(self, round_: int, owner: str) -> _RoundState:
        if round_ not in self._rounds:
            path = self._path(round_)
            if not path.exists():
                self._rounds[round_] = _RoundState(owner)
            else:
                try:
                    raw = path.read_bytes()
                    if len(raw) > _MAX_FILE:
                        raise ValueError("file too large")
                    self._rounds[round_] = _RoundState.from_bytes(raw, round_)
                except (OSError, ValueError, TypeError, KeyError, msgpack.UnpackException) as exc:
                    raise BadVaultState("vault_state", f"{path} is unreadable ({exc}); refusing") from None
        state = self._rounds[round_]
        if state.owner != owner:
            raise BadVaultState("vault_state", f"round {round_} vault belongs to {state.owner}, not {owner}")
        return state

    def _persist(self, round_: int, state: _RoundState) -> None:
        atomic_write(self._path(round_), state.to_bytes(round_), mode=0o600)

    def senders(self, round_: int, owner: str) -> list[str]:
        """Whose shares this vault holds for `round_` (sorted)."""
        return sorted(self._state(round_, site_id(owner)).shares)

    @counted
    def accept(
        self,
        secrets: RoundSecrets,
        sender: str,
        blob: bytes,
        advertised: Sequence[Advertised],
        graph: Mapping[str, Sequence[str]],
    ) -> None:
        """Decrypt, check and store `sender`'s shares for this site (sender: the transport's peer)."""
        view = own_view(secrets, advertised, graph)
        me, sender = secrets.owner, site_id(sender)
        msg = ShareMsg.from_bytes(blob, BadShare)
        if msg.round != secrets.round:
            raise BadShare("round", f"share for round {msg.round}, this is round {secrets.round}")
        if msg.recipient != me:
            raise BadShare("recipient", f"share for {msg.recipient}, this is {me}")
        if msg.sender != sender:
            raise BadShare("sender", f"share claims sender {msg.sender} but came from {sender}")
        view.require(sender, "sender", BadShare)
        if me not in view.holders(sender):
            raise BadShare("not_neighbour", f"{sender} is not a neighbour of {me}")
        if msg.view != view.digest:
            raise BadShare("view", f"{sender} shared under another view of the keys or graph")
        key = share_key(msg.round, secrets.enc_sk, view.keys[sender].enc_pk, sender, me)
        try:
            plain = ChaCha20Poly1305(key).decrypt(msg.nonce, msg.ct, msg.aad())
        except InvalidTag:
            raise BadShare("tampered", f"share from {sender} fails authentication") from None
        x, b, c = unpack_shares(plain, BadShare)
        if x != view.x(me):
            raise BadShare("malformed", f"share from {sender} is for x={x}, this site is x={view.x(me)}")
        state = self._state(msg.round, me)
        if state.terms:
            raise BadShare("late", f"share from {sender} arrived after this site answered a reveal request")
        state.shares[sender] = _Held(x, b, c, msg.view)
        self._persist(msg.round, state)

    @counted
    def answer(
        self,
        secrets: RoundSecrets,
        request: bytes,
        committed: Collection[str],
        advertised: Sequence[Advertised],
        graph: Mapping[str, Sequence[str]],
        *,
        leader: str | None = None,
        term: int | None = None,
    ) -> bytes:
        """The RevealResponse to a leader's request, after the reveal record is on disk.

        `committed`: the round's committers (chain). `leader`/`term`, when given (the daemon knows them
        from the chain and the transport), must match the request's."""
        view = own_view(secrets, advertised, graph)
        req = RevealRequest.from_bytes(request, BadRequest)
        self._check_binding(secrets, req, leader, term)
        committers = {site_id(s) for s in committed}
        for s in committers:
            view.require(s, "committer", BadRequest)
        state = self._state(req.round, secrets.owner)
        digest = hashlib.sha256(request).digest()
        self._check_term(state, req, digest)
        # A leader bound by the caller (the chain's leader, the transport's peer) may get its own b and
        # c_sk: they tell it nothing it does not know, so they need no record. Recording them would stop
        # the next term recovering this leader as a dropout when it dies mid-unmask.
        own = req.leader if leader is not None else None
        self._check_scope(secrets.owner, view, req, committers, state, own)
        for kind in ("b", "c"):  # pair seeds need no record: the chain's commits are their guard
            for peer in getattr(req, kind):
                if peer != own:
                    state.reveals[peer] = kind
        if not any(t == req.term for t, _, _ in state.terms):
            state.terms.append((req.term, req.leader, digest))
        self._persist(req.round, state)  # the record is durable before anything is revealed
        return self._response(secrets, view, req, state).to_bytes()

    @staticmethod
    def _check_binding(
        secrets: RoundSecrets, req: RevealRequest, leader: str | None, term: int | None
    ) -> None:
        if req.round != secrets.round:
            raise BadRequest("round", f"request for round {req.round}, this is round {secrets.round}")
        if req.recipient != secrets.owner:
            raise BadRequest("recipient", f"request for {req.recipient}, this is {secrets.owner}")
        if leader is not None and req.leader != site_id(leader):
            raise BadRequest("leader", f"request names leader {req.leader}, the leader is {site_id(leader)}")
        if term is not None and req.term != term:
            raise BadRequest("term", f"request is for term {req.term}, the term is {term}")

    @staticmethod
    def _check_term(state: _RoundState, req: RevealRequest, digest: bytes) -> None:
        """Terms only go forward; a term already answered is answered again only for the same request."""
        if not state.terms:
            return
        latest = max(t for t, _, _ in state.terms)
        if req.term < latest:
            raise ReplayedRequest("replay", f"request of term {req.term} after term {latest} was answered")
        if req.term == latest and all(
            (req.leader, digest) != (ld, d) for t, ld, d in state.terms if t == latest
        ):
            raise ReplayedRequest(
                "term_conflict", f"a different request under term {latest}, already answered"
            )

    @staticmethod
    def _check_scope(
        me: str,
        view: RoundView,
        req: RevealRequest,
        committers: set[str],
        state: _RoundState,
        own: str | None,
    ) -> None:
        both = set(req.b) & set(req.c)
        if both:
            raise DoubleReveal("double_reveal", f"asks both shares of {sorted(both)} in one request")
        twice = [p for p in req.b if p != own and state.reveals.get(p, "b") != "b"]
        twice += [p for p in req.c if p != own and state.reveals.get(p, "c") != "c"]
        if twice:
            raise DoubleReveal("double_reveal", f"the other share of {sorted(twice)} was revealed this round")
        if set(req.pair) & committers:
            raise BadRequest(
                "committed_pair", f"pair seeds with committers {sorted(set(req.pair) & committers)}"
            )
        survivors, dropped = set(req.survivors), set(req.dropped)
        if survivors & dropped or survivors | dropped != committers:
            raise BadRequest("sets", "survivors and dropped must split the round's committers")
        if me not in survivors:
            raise BadRequest("not_survivor", f"{me} is asked to reveal but is not listed as a survivor")
        if not connected(view.graph, survivors):
            # Masks between survivors hide each component's sum only as a whole: a split would leak.
            raise BadRequest("disconnected", "the survivors do not form one connected neighbourhood")
        mine = set(view.holders(me))
        absent = set(view.keys) - committers
        others = mine - {me}
        want = (sorted(mine & survivors), sorted(others & (dropped | absent)), sorted(others & absent))
        if (list(req.b), list(req.c), list(req.pair)) != want:
            raise BadRequest("scope", "request does not ask exactly what the survivors and dropped imply")

    @staticmethod
    def _response(
        secrets: RoundSecrets, view: RoundView, req: RevealRequest, state: _RoundState
    ) -> RevealResponse:
        held = {s: h for s, h in state.shares.items() if h.view == view.digest}
        me, sk = secrets.owner, secrets.mask_sk
        return RevealResponse(
            req.round, req.term, req.leader, secrets.owner,
            {p: held[p].b for p in req.b if p in held},
            {p: held[p].c for p in req.c if p in held},
            {p: pair_seed(req.round, sk, me, p, view.keys[p].mask_pk) for p in req.pair},
        )  # fmt: skip

    def forget_before(self, round_: int) -> None:
        """Drop every round before `round_` (their secrets can no longer matter)."""
        for path in self.directory.glob("round-*.msgpack"):
            stem = path.stem.removeprefix("round-")
            if stem.isdigit() and int(stem) < round_:
                path.unlink(missing_ok=True)
        for r in [r for r in self._rounds if r < round_]:
            del self._rounds[r]
