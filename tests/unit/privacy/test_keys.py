"""Round secrets: fresh per round, saved 0600 and atomically, loaded only for their own round and site."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from secagg_sim import address

from swarmd.privacy import BadSecrets, RoundSecrets
from swarmd.privacy.keys import pair_seed


def test_new_save_load(tmp_path: Path) -> None:
    s = RoundSecrets.new(4, address(1))  # checksummed-looking (upper case) address
    assert s.owner == address(1).lower()
    mask_pk, enc_pk = s.public
    assert len(mask_pk) == len(enc_pk) == 32 and mask_pk != enc_pk
    path = s.save(tmp_path / "secrets" / "round-4.msgpack")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert RoundSecrets.load(path, 4, address(1)) == s
    assert "mask_sk" not in repr(s) and s.b.hex() not in repr(s)
    assert RoundSecrets.new(4, address(1)).public != s.public


def test_load_refuses_other_rounds_sites_and_garbage(tmp_path: Path) -> None:
    path = RoundSecrets.new(4, address(1)).save(tmp_path / "s")
    for round_, owner in ((5, address(1)), (4, address(2))):
        with pytest.raises(BadSecrets):
            RoundSecrets.load(path, round_, owner)
    path.write_bytes(b"\x81\xa1v\x02")
    with pytest.raises(BadSecrets):
        RoundSecrets.load(path, 4, address(1))
    with pytest.raises(BadSecrets):
        RoundSecrets.load(tmp_path / "absent", 4, address(1))


def test_pair_seed_is_symmetric_and_bound_to_round() -> None:
    a, b = RoundSecrets.new(1, address(1)), RoundSecrets.new(1, address(2))
    ab = pair_seed(1, a.mask_sk, a.owner, b.owner, b.public[0])
    assert ab == pair_seed(1, b.mask_sk, b.owner, a.owner, a.public[0])
    assert ab != pair_seed(2, a.mask_sk, a.owner, b.owner, b.public[0])
