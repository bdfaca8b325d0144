"""The unmask transcript: what a leader rebuilt and used to unmask a round's sum, so anyone can redo it.

`UnmaskTranscript` holds the self-mask seeds b_i of the survivors S, the mask secret keys c_sk_i of the
dropped D (and of the absent X whose keys the leader could rebuild), and the survivors' pair seeds with
the absent sites whose keys it could not. `masks_of` turns a transcript into the keystreams to subtract
(the Unmasker uses it too, so the leader and an auditor subtract the same masks in the same way);
`check` holds a transcript to the chain's facts: exactly S's seeds, every dropped key, each key matching
the mask public key advertised on chain, a pair seed derived from a key where the key is there.

The encoding is msgpack under exact keys, types and sizes (like `wire`); `from_bytes` raises
`BadTranscript` with a stable reason for anything else. The transcript reveals what the leader learned
anyway (docs/protocol.md, "Who learns what"), which is why it is only served to members.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from swarmd.privacy.errors import BadTranscript, SecAggError
from swarmd.privacy.keys import pair_seed, public_of
from swarmd.privacy.masks import apply_masks, decode
from swarmd.privacy.params import KEY_SIZE, SecAggParams
from swarmd.privacy.view import RoundView
from swarmd.privacy.wire import VERSION, _bin, _int, _keys, _pack, _site, _site_map, _sites, _unpack

ID_DOMAIN = b"swarmd-secagg-transcript"
MAX_TRANSCRIPT = 60 << 10  # it travels in one secagg reply; about 700 survivors' seeds
UNBOUND = bytes(32)  # the merged hash of a transcript not yet bound to the model it made

Masks = list[tuple[bytes, int]]


def transcript_file(state_dir: Path, round_: int) -> Path:
    """Where a leader keeps the transcript of round `round_` under its state dir."""
    return state_dir / "secagg" / "transcripts" / f"round-{round_:012d}.msgpack"


def transcript_id(round_: int, term: int, merged: bytes) -> bytes:
    """The 32 bytes an auditor asks a leader for: sha256(domain | round | term | finalized model hash)."""
    return hashlib.sha256(ID_DOMAIN + round_.to_bytes(8, "big") + term.to_bytes(8, "big") + merged).digest()


@dataclass(frozen=True, repr=False)
class UnmaskTranscript:
    round: int
    term: int
    leader: str
    merged: bytes  # the content hash of the model the leader finalized from this unmasking
    survivors: tuple[str, ...]
    dropped: tuple[str, ...]
    b: dict[str, bytes] = field(default_factory=dict)  # survivor -> self-mask seed
    keys: dict[str, bytes] = field(default_factory=dict)  # dropped or absent site -> mask secret key
    pairs: dict[str, dict[str, bytes]] = field(default_factory=dict)  # survivor -> absent -> pair seed

    _KEYS = ("v", "round", "term", "leader", "merged", "survivors", "dropped", "b", "keys", "pairs")

    def __repr__(self) -> str:  # it holds secrets: never print one into a log
        return f"UnmaskTranscript(round={self.round}, term={self.term}, survivors={len(self.survivors)})"

    @property
    def id(self) -> bytes:
        return transcript_id(self.round, self.term, self.merged)

    def bound_to(self, merged: bytes) -> UnmaskTranscript:
        """This transcript, naming the model the unmasking produced."""
        return replace(self, merged=bytes(_bin(bytes(merged), 32, "merged", BadTranscript)))

    def to_bytes(self) -> bytes:
        body = {k: getattr(self, k) for k in self._KEYS[1:]}
        raw = _pack({"v": VERSION, **{k: list(v) if isinstance(v, tuple) else v for k, v in body.items()}})
        if len(raw) > MAX_TRANSCRIPT:
            raise BadTranscript("too_large", f"{len(raw)} bytes, more than {MAX_TRANSCRIPT} can be served")
        return raw

    @classmethod
    def from_bytes(cls, raw: object) -> UnmaskTranscript:
        """The transcript in `raw`; BadTranscript("malformed" | "version") for anything but exactly one."""
        err = BadTranscript
        o = _unpack(raw, MAX_TRANSCRIPT, err)
        _keys(o, cls._KEYS, err)
        pairs = o["pairs"]
        if type(pairs) is not dict:
            raise err("malformed", "pairs must be a map")
        return cls(
            _int(o["round"], "round", err), _int(o["term"], "term", err), _site(o["leader"], "leader", err),
            _bin(o["merged"], 32, "merged", err), _sites(o["survivors"], "survivors", err),
            _sites(o["dropped"], "dropped", err), _site_map(o["b"], KEY_SIZE, "b", err),
            _site_map(o["keys"], KEY_SIZE, "keys", err),
            {_site(j, "pairs", err): _site_map(m, KEY_SIZE, "pairs", err) for j, m in pairs.items()},
        )  # fmt: skip


def absent_edges(view: RoundView, survivors: list[str], absent: set[str]) -> list[tuple[str, str]]:
    """(survivor j, absent x) for every edge whose mask j added and no x ever cancels."""
    return [(j, x) for j in survivors for x in view.graph[j] if x in absent]


def masks_of(t: UnmaskTranscript, view: RoundView) -> Masks:
    """The (seed, sign) keystreams to subtract from the survivors' masked sum: each survivor's self-mask,
    the survivors' pair masks with each dropped site (from its key), and with each absent site (from its
    key when the transcript holds it, else from the survivor's own pair seed)."""
    survivors = set(t.survivors)
    masks: Masks = [(t.b[i], -1) for i in t.survivors]
    for i in t.dropped:
        for j in view.graph[i]:
            if j in survivors:  # j added +PRG(s_ji) if i > j: subtract what j added
                masks.append((pair_seed(t.round, t.keys[i], i, j, view.keys[j].mask_pk), -1 if i > j else 1))
    absent = set(view.keys) - survivors - set(t.dropped)
    for j, x in absent_edges(view, list(t.survivors), absent):
        key = t.keys.get(x)
        seed = pair_seed(t.round, key, x, j, view.keys[j].mask_pk) if key else t.pairs[j][x]
        masks.append((seed, -1 if x > j else 1))
    return masks


def check(t: UnmaskTranscript, view: RoundView, committed: Mapping[str, int]) -> None:
    """Hold `t` to the round: S and D split the committers, b covers exactly S, keys cover D (and only
    D and X) and each matches the chain's mask public key, a pair seed stands exactly for each S-X edge
    whose absent key is not given. BadTranscript otherwise."""
    S, D = set(t.survivors), set(t.dropped)
    if S & D or set(committed) != S | D or not S:
        raise BadTranscript("sets", "survivors and dropped do not split the round's committers")
    X = set(view.keys) - S - D
    if set(t.b) != S:
        raise BadTranscript("scope", "self-mask seeds are not exactly the survivors'")
    if not D <= set(t.keys) <= D | X:
        raise BadTranscript("scope", "mask keys are not every dropped site's (and only absent ones' else)")
    for site, key in t.keys.items():
        if public_of(key) != view.keys[site].mask_pk:
            raise BadTranscript("forged_key", f"the mask key of {site} is not the one it advertised on chain")
    want = {(j, x) for j, x in absent_edges(view, sorted(S), X) if x not in t.keys}
    got = {(j, x) for j, m in t.pairs.items() for x in m}
    if got != want:
        raise BadTranscript(
            "scope", "pair seeds are not exactly those of survivor-absent edges without a key"
        )


def unmask_sum(
    total: dict[str, np.ndarray],
    t: UnmaskTranscript,
    view: RoundView,
    committed: Mapping[str, int],
    params: SecAggParams,
) -> dict[str, np.ndarray]:
    """The float32 mean the leader had to get from the survivors' masked sum `total` (uint32, mod 2^32,
    consumed) and transcript `t`: check, subtract `masks_of`, decode over the survivors' samples."""
    check(t, view, committed)
    n_total = sum(committed[i] for i in t.survivors)
    if n_total > params.sample_bound:
        raise SecAggError("sample_bound", f"survivors hold {n_total} samples, above {params.sample_bound}")
    apply_masks(total, masks_of(t, view))
    return {name: decode(v, n_total, params) for name, v in total.items()}


def masked_total(updates: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    """The mod-2^32 sum of masked updates (uint32, same names and shapes; BadTranscript("inputs") else)."""
    out: dict[str, np.ndarray] | None = None
    for site in sorted(updates):
        tensors: dict[str, Any] = dict(updates[site])
        if any(not isinstance(v, np.ndarray) or v.dtype != np.uint32 for v in tensors.values()):
            raise BadTranscript("inputs", f"{site}: a masked tensor is not a uint32 array")
        if out is None:
            out = {k: np.array(v, dtype=np.uint32, order="C") for k, v in tensors.items()}
            continue
        if set(tensors) != set(out) or any(tensors[k].shape != v.shape for k, v in out.items()):
            raise BadTranscript("inputs", f"{site}: masked tensors differ in names or shapes from the others")
        for k, acc in out.items():
            np.add(acc, tensors[k], out=acc)
    if out is None:
        raise BadTranscript("inputs", "no masked input")
    return out
