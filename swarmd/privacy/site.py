"""What a committing site does: Shamir-share its secrets to its share holders and mask its update."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import numpy as np
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from swarmd.privacy import shamir
from swarmd.privacy.errors import SecAggError
from swarmd.privacy.keys import RoundSecrets, pair_seed, polynomial, share_key
from swarmd.privacy.masks import apply_masks, quantise
from swarmd.privacy.params import Advertised, SecAggParams
from swarmd.privacy.view import RoundView
from swarmd.privacy.wire import NONCE_SIZE, ShareMsg, pack_shares


def own_view(
    secrets: RoundSecrets, advertised: Sequence[Advertised], graph: Mapping[str, Sequence[str]]
) -> RoundView:
    """The round's view, checked to hold this site with exactly the keys its secrets make."""
    view = RoundView.of(secrets.round, advertised, graph)
    view.require(secrets.owner, "this site")
    mine = view.keys[secrets.owner]
    if (mine.mask_pk, mine.enc_pk) != secrets.public:
        raise SecAggError(
            "keys_changed", f"the chain holds other keys for {secrets.owner} in round {secrets.round}"
        )
    return view


def make_shares(
    secrets: RoundSecrets,
    advertised: Sequence[Advertised],
    graph: Mapping[str, Sequence[str]],
    params: SecAggParams,
) -> dict[str, bytes]:
    """holder -> encrypted ShareMsg of this site's shares of b and c_sk (t of its holders needed).

    The holders are the neighbours AND this site itself: deliver the entry for the owner to the site's
    own vault (its own share of b lets the leader remove its self-mask when a neighbour is silent)."""
    view = own_view(secrets, advertised, graph)
    me = secrets.owner
    holders = view.holders(me)
    t = view.threshold(me, params)
    xs = [view.x(h) for h in holders]
    # enc_sk is never revealed: it keys polynomials that are random to everyone else, and stay the same
    # when the daemon shares again after a restart (a holder keeping an earlier share must agree).
    b_poly = polynomial(secrets.enc_sk, view.digest, b"b", t - 1, shamir.PRIME)
    c_poly = polynomial(secrets.enc_sk, view.digest, b"c", t - 1, shamir.PRIME)
    b_shares = shamir.split(secrets.b, t, xs, b_poly)
    c_shares = shamir.split(secrets.mask_sk, t, xs, c_poly)
    out: dict[str, bytes] = {}
    for holder in holders:
        x = view.x(holder)
        key = share_key(secrets.round, secrets.enc_sk, view.keys[holder].enc_pk, me, holder)
        plain = pack_shares(x, shamir.to_bytes(b_shares[x]), shamir.to_bytes(c_shares[x]))
        msg = ShareMsg(secrets.round, me, holder, view.digest, os.urandom(NONCE_SIZE), b"")
        ct = ChaCha20Poly1305(key).encrypt(msg.nonce, plain, msg.aad())
        out[holder] = ShareMsg(msg.round, me, holder, msg.view, msg.nonce, ct).to_bytes()
    return out


def mask_update(
    secrets: RoundSecrets,
    advertised: Sequence[Advertised],
    graph: Mapping[str, Sequence[str]],
    tensors: Mapping[str, np.ndarray],
    n_samples: int,
    params: SecAggParams,
) -> dict[str, np.ndarray]:
    """The masked update: uint32 tensors of the same names and shapes (see `masks`)."""
    view = own_view(secrets, advertised, graph)
    me = secrets.owner
    out = quantise(tensors, n_samples, params)
    masks = [(secrets.b, 1)]
    for j in view.graph[me]:
        seed = pair_seed(secrets.round, secrets.mask_sk, me, j, view.keys[j].mask_pk)
        masks.append((seed, 1 if j > me else -1))
    apply_masks(out, masks)
    return out
