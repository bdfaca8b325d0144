"""The admin role against a real anvil: the two-step transfer (offer, accept, cancel, overwrite) and
`swarm admin`. Reverts are asserted by error name and arguments; events by name and arguments."""

from __future__ import annotations

from pathlib import Path

import pytest
from chainkit import Consortium, curve_key, site_toml
from eth_account.signers.local import LocalAccount
from typer.testing import CliRunner

from swarmd.cli.swarm import app
from swarmd.ledger import MemberStatus, errors

pytestmark = pytest.mark.chain

ZERO = "0x" + "00" * 20


def _admin_events(c: Consortium) -> list[tuple[str, dict[str, object]]]:
    return [(e.name, e.args) for e in c.admin.events().poll() if e.name.startswith("Admin")]


def test_transfer_takes_effect_only_when_accepted(consortium: Consortium) -> None:
    c = consortium
    old, heir, outsider = c.admin, c.sites[0], c.outsiders[0]
    outsider.request_join(curve_key(41), "tcp://o:1")
    old.transfer_admin(heir.sender)  # type: ignore[arg-type]
    assert old.admin() == old.sender and old.pending_admin() == heir.sender
    with pytest.raises(errors.NotAdmin) as exc:
        heir.admit(outsider.sender)  # type: ignore[arg-type]
    assert exc.value.error_args == (heir.sender,)
    with pytest.raises(errors.NotPendingAdmin) as exc:
        outsider.accept_admin()
    assert exc.value.error_args == (outsider.sender, heir.sender)

    heir.accept_admin()
    assert old.admin() == heir.sender and old.pending_admin() is None
    assert old.binding_info().admin == heir.sender
    with pytest.raises(errors.NotAdmin) as exc:
        old.admit(outsider.sender)  # type: ignore[arg-type]
    assert exc.value.error_args == (old.sender,)
    heir.admit(outsider.sender)  # type: ignore[arg-type]
    assert old.member(outsider.sender).status is MemberStatus.ACTIVE  # type: ignore[arg-type]
    with pytest.raises(errors.NotPendingAdmin) as exc:
        heir.accept_admin()  # the offer was used up
    assert exc.value.error_args == (heir.sender, ZERO)
    assert _admin_events(c) == [
        ("AdminTransferred", {"previousAdmin": ZERO, "newAdmin": old.sender}),  # deploy
        ("AdminTransferStarted", {"admin": old.sender, "newAdmin": heir.sender}),
        ("AdminTransferred", {"previousAdmin": old.sender, "newAdmin": heir.sender}),
    ]


def test_only_the_admin_offers_and_cancels(consortium: Consortium) -> None:
    c = consortium
    a, b = c.sites[0], c.sites[1]
    with pytest.raises(errors.NotAdmin) as exc:
        a.transfer_admin(a.sender)  # type: ignore[arg-type]
    assert exc.value.error_args == (a.sender,)
    with pytest.raises(errors.ZeroAddress):
        c.admin.transfer_admin(ZERO)
    with pytest.raises(errors.NoPendingAdmin):
        c.admin.cancel_admin_transfer()

    c.admin.transfer_admin(a.sender)  # type: ignore[arg-type]
    c.admin.transfer_admin(b.sender)  # type: ignore[arg-type]  # a second offer replaces the first
    with pytest.raises(errors.NotPendingAdmin) as exc:
        a.accept_admin()
    assert exc.value.error_args == (a.sender, b.sender)
    with pytest.raises(errors.NotAdmin) as exc:
        b.cancel_admin_transfer()  # the one offered the role cannot withdraw the offer
    assert exc.value.error_args == (b.sender,)
    c.admin.cancel_admin_transfer()
    assert c.admin.pending_admin() is None
    with pytest.raises(errors.NotPendingAdmin) as exc:
        b.accept_admin()
    assert exc.value.error_args == (b.sender, ZERO)
    assert c.admin.admin() == c.admin.sender
    assert _admin_events(c)[1:] == [
        ("AdminTransferStarted", {"admin": c.admin.sender, "newAdmin": a.sender}),
        ("AdminTransferStarted", {"admin": c.admin.sender, "newAdmin": b.sender}),
        ("AdminTransferCancelled", {"admin": c.admin.sender, "pendingAdmin": b.sender}),
    ]


def test_swarm_admin_cli(consortium: Consortium, accounts: list[LocalAccount], tmp_path: Path) -> None:
    c = consortium
    rpc, contract = c.devnet.rpc_url, c.admin.address
    keys = {a.address: a.key.hex() for a in accounts}
    lead = site_toml(tmp_path, "lead", keys[c.admin.sender], rpc, contract)  # type: ignore[index]
    heir = site_toml(tmp_path, "heir", keys[c.sites[0].sender], rpc, contract)  # type: ignore[index]
    runner = CliRunner()

    def swarm(*args: str, code: int = 0) -> str:
        res = runner.invoke(app, ["admin", *args], env={"COLUMNS": "200"})
        assert res.exit_code == code, res.output
        return res.output

    new = c.sites[0].sender
    assert f"pending admin {new}" in swarm("transfer", new, "--config", str(lead))  # type: ignore[str-bytes-safe]
    assert '"pending_admin": "' + new in swarm("show", "--config", str(heir), "--json")  # type: ignore[operator]
    assert "NotAdmin" in swarm("cancel", "--config", str(heir), code=6)
    assert f"admin {new}, pending admin none" in swarm("accept", "--config", str(heir))
    assert c.admin.admin() == new
    assert "NotPendingAdmin" in swarm("accept", "--config", str(lead), code=6)
    assert "NoPendingAdmin" in swarm("cancel", "--config", str(heir), code=6)
