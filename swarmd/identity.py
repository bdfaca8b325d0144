"""Site keys: the Ethereum account (an encrypted keystore v3 file) and the CURVE keypair of ZeroMQ.

The account signs every ledger transaction; its passphrase comes from a file (e.g. systemd
`LoadCredential=`), never from the command line. The CURVE secret key is a z85 text file readable by
the site only (0600), like ZeroMQ's own certificate files. Both are written atomically and never
overwritten: losing a site key means losing the site's membership.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import zmq
import zmq.utils.z85 as z85
from eth_account import Account
from eth_account.signers.local import LocalAccount

from swarmd.errors import IdentityError, StoreError
from swarmd.fsutil import atomic_write_text

_CURVE_HEADER = "# swarmd CURVE secret key (z85). Keep it private: anyone holding it can pose as this site.\n"


@dataclass(frozen=True)
class CurveKeys:
    """A CURVE keypair, both halves as 40 z85 characters (the form ZeroMQ socket options take)."""

    public: bytes
    secret: bytes

    @property
    def public_raw(self) -> bytes:
        """The public key as 32 raw bytes, as stored on chain."""
        return bytes(z85.decode(self.public))

    @classmethod
    def from_secret(cls, secret: bytes) -> CurveKeys:
        try:
            z85.decode(secret)  # curve_public does not reject characters outside the z85 alphabet
            public = zmq.curve_public(secret)
        except (zmq.ZMQError, ValueError, KeyError, IndexError) as exc:
            raise IdentityError(f"not a valid CURVE secret key: {exc}") from exc
        return cls(public=bytes(public), secret=bytes(secret))

    @classmethod
    def generate(cls) -> CurveKeys:
        public, secret = zmq.curve_keypair()
        return cls(public=bytes(public), secret=bytes(secret))


@dataclass(frozen=True)
class SiteIdentity:
    account: LocalAccount
    curve: CurveKeys

    @property
    def address(self) -> str:
        return str(self.account.address)


def read_passphrase(path: Path) -> str:
    """The passphrase in `path` without its trailing newline; IdentityError when missing or empty."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise IdentityError(f"passphrase file {path} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read passphrase file {path}: {exc}") from None
    passphrase = text.rstrip("\r\n")
    if not passphrase:
        raise IdentityError(f"passphrase file {path} is empty")
    return passphrase


def create_identity(
    keystore: Path,
    curve_secret: Path,
    passphrase: str,
    *,
    private_key: str | None = None,
    kdf_iterations: int | None = None,
) -> SiteIdentity:
    """Create a site identity: a keystore (new key, or `private_key`) and a fresh CURVE keypair.

    Refuses to overwrite either file. `kdf_iterations` selects pbkdf2 with that many iterations
    (cheap keys for tests and devnets); without it the keystore uses scrypt's standard work factor.
    """
    keystore, curve_secret = Path(keystore), Path(curve_secret)
    for path in (keystore, curve_secret):
        if path.exists():
            raise IdentityError(f"{path} already exists; refusing to overwrite a site key")
    if not passphrase:
        raise IdentityError("the keystore passphrase must not be empty")
    if kdf_iterations is not None and kdf_iterations < 1:
        raise IdentityError(f"kdf_iterations must be >= 1, got {kdf_iterations}")

    try:
        account = Account.from_key(private_key) if private_key else Account.create()
    except (ValueError, TypeError) as exc:
        raise IdentityError(f"not a valid private key: {type(exc).__name__}") from None
    if kdf_iterations is None:
        encrypted = Account.encrypt(account.key, passphrase, kdf="scrypt")
    else:
        encrypted = Account.encrypt(account.key, passphrase, kdf="pbkdf2", iterations=kdf_iterations)
    curve = CurveKeys.generate()

    _write_private(curve_secret, _CURVE_HEADER + curve.secret.decode("ascii") + "\n")
    try:
        _write_private(keystore, json.dumps(encrypted, indent=2) + "\n")
    except IdentityError:
        curve_secret.unlink(missing_ok=True)  # leave no half identity behind
        raise
    return SiteIdentity(account=account, curve=curve)


def load_identity(keystore: Path, passphrase_file: Path, curve_secret: Path) -> SiteIdentity:
    """Unlock the keystore with the passphrase in `passphrase_file` and read the CURVE secret."""
    passphrase = read_passphrase(passphrase_file)
    return SiteIdentity(account=load_account(keystore, passphrase), curve=load_curve(curve_secret))


def load_account(keystore: Path, passphrase: str) -> LocalAccount:
    try:
        doc = json.loads(Path(keystore).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise IdentityError(
            f"keystore {keystore} does not exist", hint="create it with `swarm init`"
        ) from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise IdentityError(f"keystore {keystore} is unreadable or not JSON: {exc}") from None
    if not isinstance(doc, dict) or ("crypto" not in doc and "Crypto" not in doc):
        raise IdentityError(f"keystore {keystore} is not an Ethereum keystore v3 file")
    try:
        key = Account.decrypt(doc, passphrase)
    except ValueError as exc:
        if "MAC mismatch" in str(exc):
            raise IdentityError(f"wrong passphrase for keystore {keystore}") from None
        raise IdentityError(f"keystore {keystore} is corrupt: {exc}") from None
    except (KeyError, TypeError) as exc:
        raise IdentityError(f"keystore {keystore} is corrupt: missing {exc}") from None
    return Account.from_key(key)


def load_curve(curve_secret: Path) -> CurveKeys:
    try:
        text = Path(curve_secret).read_text(encoding="ascii")
    except FileNotFoundError:
        raise IdentityError(f"CURVE secret key {curve_secret} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise IdentityError(f"cannot read CURVE secret key {curve_secret}: {exc}") from None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.startswith("#")]
    if len(lines) != 1 or len(lines[0]) != 40:
        raise IdentityError(f"{curve_secret} does not hold one 40-character z85 CURVE secret key")
    return CurveKeys.from_secret(lines[0].encode("ascii"))


def _write_private(path: Path, text: str) -> None:
    try:
        # A new key directory is private too (an existing one keeps the mode its owner chose).
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        atomic_write_text(path, text, mode=0o600)
    except OSError as exc:
        raise IdentityError(f"cannot create {path.parent}: {exc.strerror or exc}") from None
    except StoreError as exc:
        raise IdentityError(str(exc)) from None
