"""Site identity: keystore v3 + CURVE keypair on real files; every bad input is an IdentityError."""

from __future__ import annotations

import json
import stat
from pathlib import Path

import pytest
import zmq

from swarmd.errors import IdentityError
from swarmd.identity import CurveKeys, create_identity, load_identity, read_passphrase

DEV_KEY = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"  # anvil dev account 1


def _make(tmp_path: Path, **kwargs: object):
    pw = tmp_path / "passphrase"
    pw.write_text("correct horse\n")
    ident = create_identity(
        tmp_path / "keys" / "account.json",
        tmp_path / "keys" / "curve.key",
        "correct horse",
        kdf_iterations=2,
        **kwargs,  # type: ignore[arg-type]
    )
    return ident, pw


def test_create_then_load_round_trips(tmp_path: Path) -> None:
    ident, pw = _make(tmp_path, private_key=DEV_KEY)
    assert ident.address == "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"
    loaded = load_identity(tmp_path / "keys" / "account.json", pw, tmp_path / "keys" / "curve.key")
    assert loaded.address == ident.address
    assert loaded.account.key == ident.account.key
    assert loaded.curve == ident.curve
    assert len(loaded.curve.public) == 40 and len(loaded.curve.public_raw) == 32
    assert zmq.curve_public(loaded.curve.secret) == loaded.curve.public


def test_files_are_private_and_keystore_is_v3(tmp_path: Path) -> None:
    _make(tmp_path)
    for name in ("account.json", "curve.key"):
        mode = stat.S_IMODE((tmp_path / "keys" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    doc = json.loads((tmp_path / "keys" / "account.json").read_text())
    assert doc["version"] == 3 and doc["crypto"]["kdf"] == "pbkdf2"
    assert not list((tmp_path / "keys").glob(".*.tmp")), "no temporary files left behind"


def test_refuses_to_overwrite(tmp_path: Path) -> None:
    _make(tmp_path)
    before = (tmp_path / "keys" / "account.json").read_bytes()
    with pytest.raises(IdentityError, match="refusing to overwrite"):
        _make(tmp_path)
    assert (tmp_path / "keys" / "account.json").read_bytes() == before


def test_wrong_passphrase(tmp_path: Path) -> None:
    _make(tmp_path)
    bad = tmp_path / "bad"
    bad.write_text("wrong\n")
    with pytest.raises(IdentityError, match="wrong passphrase"):
        load_identity(tmp_path / "keys" / "account.json", bad, tmp_path / "keys" / "curve.key")


@pytest.mark.parametrize(
    ("target", "content", "message"),
    [
        ("account.json", None, "does not exist"),
        ("account.json", "{not json", "not JSON"),
        ("account.json", '{"address": "00"}', "not an Ethereum keystore"),
        ("curve.key", None, "does not exist"),
        ("curve.key", "short\n", "40-character"),
        ("curve.key", "~" * 40 + "\n", "not a valid CURVE secret"),
    ],
)
def test_missing_or_corrupt_files(tmp_path: Path, target: str, content: str | None, message: str) -> None:
    _, pw = _make(tmp_path)
    path = tmp_path / "keys" / target
    if content is None:
        path.unlink()
    else:
        path.write_text(content)
    with pytest.raises(IdentityError, match=message):
        load_identity(tmp_path / "keys" / "account.json", pw, tmp_path / "keys" / "curve.key")


def test_corrupt_ciphertext_is_identity_error(tmp_path: Path) -> None:
    _, pw = _make(tmp_path)
    path = tmp_path / "keys" / "account.json"
    doc = json.loads(path.read_text())
    doc["crypto"]["ciphertext"] = "00" * 32
    path.write_text(json.dumps(doc))
    with pytest.raises(IdentityError):
        load_identity(path, pw, tmp_path / "keys" / "curve.key")


def test_passphrase_file_rules(tmp_path: Path) -> None:
    p = tmp_path / "pw"
    p.write_text("  spaces kept  \r\n")
    assert read_passphrase(p) == "  spaces kept  "
    p.write_text("\n")
    with pytest.raises(IdentityError, match="empty"):
        read_passphrase(p)
    with pytest.raises(IdentityError, match="does not exist"):
        read_passphrase(tmp_path / "nope")


def test_bad_private_key_and_empty_passphrase(tmp_path: Path) -> None:
    with pytest.raises(IdentityError, match="private key"):
        create_identity(tmp_path / "a.json", tmp_path / "c.key", "pw", private_key="0x1234", kdf_iterations=2)
    with pytest.raises(IdentityError, match="empty"):
        create_identity(tmp_path / "a.json", tmp_path / "c.key", "", kdf_iterations=2)
    assert not (tmp_path / "a.json").exists() and not (tmp_path / "c.key").exists()


def test_curve_keys_generate_distinct() -> None:
    a, b = CurveKeys.generate(), CurveKeys.generate()
    assert a.public != b.public
    assert CurveKeys.from_secret(a.secret) == a
