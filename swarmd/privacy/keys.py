"""A site's per-round secrets and the keys both ends of a pair derive from them.

Each round a site draws two X25519 key pairs (mask agreement, share encryption) and a 32-byte
self-mask seed b, persists them 0600 (they must outlive a restart between advertise and unmask), and
advertises the public halves on chain. Pair seeds and share-encryption keys are HKDF-SHA256 of an X25519
agreement, bound to the round and both addresses (lower address first for the symmetric pair seed).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import msgpack
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from swarmd.fsutil import atomic_write
from swarmd.privacy.errors import BadSecrets, SecAggError
from swarmd.privacy.params import KEY_SIZE, site_bytes, site_id

PAIR_INFO = b"swarmd-secagg-pair"
SHARE_INFO = b"swarmd-secagg-share"
_FILE_KEYS = ("v", "round", "owner", "mask_sk", "enc_sk", "b")
_RAW = serialization.Encoding.Raw


def _raw_private(key: X25519PrivateKey) -> bytes:
    return key.private_bytes(_RAW, serialization.PrivateFormat.Raw, serialization.NoEncryption())


def _raw_public(key: X25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(_RAW, serialization.PublicFormat.Raw)


def public_of(private: bytes) -> bytes:
    """The X25519 public key of 32 private bytes (to check a rebuilt mask key against the chain)."""
    return _raw_public(X25519PrivateKey.from_private_bytes(private))


@dataclass(frozen=True, repr=False)
class RoundSecrets:
    """One site's secrets for one round: mask key c_sk, encryption key e_sk, self-mask seed b (raw bytes)."""

    round: int
    owner: str
    mask_sk: bytes
    enc_sk: bytes
    b: bytes

    def __post_init__(self) -> None:
        object.__setattr__(self, "owner", site_id(self.owner))
        if type(self.round) is not int or self.round < 0:
            raise BadSecrets("secrets", f"round must be an int >= 0, got {self.round!r}")
        for name in ("mask_sk", "enc_sk", "b"):
            value = getattr(self, name)
            if not isinstance(value, bytes) or len(value) != KEY_SIZE:
                raise BadSecrets("secrets", f"{name} must be {KEY_SIZE} bytes")

    def __repr__(self) -> str:  # never print a secret into a log
        return f"RoundSecrets(round={self.round}, owner={self.owner})"

    @classmethod
    def new(cls, round: int, owner: str) -> RoundSecrets:
        return cls(
            round,
            owner,
            _raw_private(X25519PrivateKey.generate()),
            _raw_private(X25519PrivateKey.generate()),
            os.urandom(KEY_SIZE),
        )

    @property
    def public(self) -> tuple[bytes, bytes]:
        """(mask_pk, enc_pk), 32 bytes each, for the advertise transaction."""
        return public_of(self.mask_sk), public_of(self.enc_sk)

    def save(self, path: str | os.PathLike[str]) -> Path:
        body = {"v": 1, "round": self.round, "owner": self.owner}
        body |= {"mask_sk": self.mask_sk, "enc_sk": self.enc_sk, "b": self.b}
        return atomic_write(path, msgpack.packb(body), mode=0o600)

    @classmethod
    def load(cls, path: str | os.PathLike[str], round: int, owner: str) -> RoundSecrets:
        """The secrets saved for (round, owner); BadSecrets if absent, corrupt, or another's."""
        try:
            raw = Path(path).read_bytes()
        except OSError as exc:
            raise BadSecrets("secrets", f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            body = msgpack.unpackb(raw, raw=False, max_bin_len=64, max_str_len=64, max_map_len=8)
        except (ValueError, TypeError, msgpack.UnpackException):
            raise BadSecrets("secrets", f"{path} is not a secrets file") from None
        if not isinstance(body, dict) or tuple(body) != _FILE_KEYS or body["v"] != 1:
            raise BadSecrets("secrets", f"{path} is not a version-1 secrets file")
        try:
            loaded = cls(body["round"], body["owner"], body["mask_sk"], body["enc_sk"], body["b"])
        except SecAggError as exc:
            raise BadSecrets("secrets", f"{path}: {exc}") from None
        if loaded.round != round or loaded.owner != site_id(owner):
            raise BadSecrets("secrets", f"{path} holds round {loaded.round} of {loaded.owner}")
        return loaded


def _agree(private: bytes, public: bytes) -> bytes:
    try:
        return X25519PrivateKey.from_private_bytes(private).exchange(
            X25519PublicKey.from_public_bytes(public)
        )
    except ValueError:  # a low-order point: the agreement would be all zeros
        raise SecAggError("key", "an advertised key is a low-order point") from None


def _hkdf(secret: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=info).derive(secret)


def polynomial(enc_sk: bytes, view_digest: bytes, which: bytes, degree: int, prime: int) -> list[int]:
    """The higher coefficients of a site's sharing polynomial for one secret under one view: uniform
    in [0, prime) (80 bytes per coefficient, bias < 2^-110) for anyone without enc_sk, and the same
    every time, so shares re-sent after a restart lie on the polynomial the first ones did."""
    if degree == 0:
        return []
    info = b"swarmd-secagg-poly" + which
    stream = HKDF(algorithm=hashes.SHA512(), length=80 * degree, salt=view_digest, info=info).derive(enc_sk)
    return [int.from_bytes(stream[80 * i : 80 * (i + 1)], "big") % prime for i in range(degree)]


def pair_seed(round_: int, mask_sk: bytes, me: str, peer: str, peer_mask_pk: bytes) -> bytes:
    """s_ij = HKDF(X25519(c_sk_i, c_pk_j), info = domain | round | min(i, j) | max(i, j))."""
    lo, hi = sorted((me, peer))
    info = PAIR_INFO + round_.to_bytes(8, "big") + site_bytes(lo) + site_bytes(hi)
    return _hkdf(_agree(mask_sk, peer_mask_pk), info)


def share_key(round_: int, enc_sk: bytes, other_enc_pk: bytes, sender: str, recipient: str) -> bytes:
    """The ChaCha20Poly1305 key of shares from `sender` to `recipient`: both ends derive the same one."""
    info = SHARE_INFO + round_.to_bytes(8, "big") + site_bytes(sender) + site_bytes(recipient)
    return _hkdf(_agree(enc_sk, other_enc_pk), info)
