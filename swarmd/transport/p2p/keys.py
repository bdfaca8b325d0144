"""One identity: a site's libp2p peer ID is its Ethereum account key (secp256k1), so the chain's member
registry, which lists accounts, also says which libp2p peers may talk to this site.

A secp256k1 peer ID inlines the compressed public key (an identity multihash, `16Uiu2...`), so the
account of any peer that completed a Noise handshake with us is read from its peer ID alone.
"""

from __future__ import annotations

from eth_keys import keys as eth_keys
from libp2p.crypto.keys import KeyPair
from libp2p.crypto.secp256k1 import Secp256k1PublicKey, create_new_key_pair
from libp2p.peer.id import ID

from swarmd.errors import IdentityError


def keypair(private_key: bytes) -> KeyPair:
    """The libp2p key pair of the account whose 32-byte secp256k1 secret is `private_key`."""
    if len(private_key) != 32:
        raise IdentityError("an account key is 32 bytes", hint="pass `SiteIdentity.account.key`")
    try:
        return create_new_key_pair(bytes(private_key))
    except ValueError as exc:
        raise IdentityError(f"not a secp256k1 secret key: {exc}") from None


def peer_id(private_key: bytes) -> ID:
    """The libp2p peer ID of an account key."""
    return ID.from_pubkey(keypair(private_key).public_key)


def account_of(peer: ID) -> str | None:
    """The checksummed Ethereum address behind a secp256k1 peer ID; None for any other key type
    (an Ed25519 or RSA peer is never a member)."""
    try:
        public = peer.extract_public_key()
    except Exception:  # noqa: BLE001 - a malformed peer ID is simply not a member
        return None
    if not isinstance(public, Secp256k1PublicKey):
        return None
    uncompressed = public.impl.format(compressed=False)[1:]
    return str(eth_keys.PublicKey(uncompressed).to_checksum_address())


def account_address(private_key: bytes) -> str:
    """The checksummed address of an account key (what the member registry lists)."""
    return str(eth_keys.PrivateKey(bytes(private_key)).public_key.to_checksum_address())
