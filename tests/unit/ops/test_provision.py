"""`create_site` (what `swarm init` and every local consortium site go through): a real keystore,
CURVE key and site.toml on disk, read back with the daemon's own loaders; and the deploy's admission
rule, which only the task decides."""

from __future__ import annotations

import stat

import pytest

from swarmd.config import load_config
from swarmd.daemon.site import site_identity
from swarmd.errors import ConfigError, IdentityError, TaskError
from swarmd.ops import create_site, site_config
from swarmd.ops.provision import (
    DEV_KDF_ITERATIONS,
    AdmissionMismatch,
    admission_majority,
    deploy_params,
    read_private_key,
)
from swarmd.train import example_task_file

ANVIL_KEY_1 = "0x59c6995e998f97a5a0044966f0945389dc9e86dae88c7a8412f4603b6b78690d"
ANVIL_ADDR_1 = "0x70997970C51812dc3A010C7d01b50e0d17dc79C8"


def _cfg(tmp_path, **kw):
    return site_config(
        tmp_path / "site",
        "charite",
        example_task_file("cxr_densenet"),
        rpc_url="http://127.0.0.1:8545",
        bind="tcp://127.0.0.1:7700",
        endpoint="tcp://site.example:7700",
        **kw,
    )


def test_create_site_writes_a_config_and_identity_the_daemon_loads(tmp_path):
    cfg = _cfg(tmp_path, data_list=tmp_path / "data.json")
    new = create_site(cfg, tmp_path / "site" / "site.toml", kdf_iterations=DEV_KDF_ITERATIONS)
    assert new.generated_passphrase
    loaded = load_config(new.path)
    assert loaded.site.name == "charite" and loaded.site.state_dir == (tmp_path / "site" / "state").resolve()
    assert loaded.site.data_list == (tmp_path / "data.json").resolve()
    assert loaded.transport.endpoint == "tcp://site.example:7700" and loaded.chain.contract == ""
    ident = site_identity(loaded)
    assert ident.address == new.identity.address
    assert ident.curve.public == new.identity.curve.public
    for secret in ("passphrase", "account.json", "curve.key"):
        mode = (tmp_path / "site" / "keys" / secret).stat().st_mode
        assert stat.S_IMODE(mode) == 0o600, secret


def test_create_site_imports_a_key_and_keeps_a_given_passphrase(tmp_path):
    pw = tmp_path / "pw"
    pw.write_text("correct horse\n")
    key = tmp_path / "key.hex"
    key.write_text(ANVIL_KEY_1 + "\n")
    cfg = _cfg(tmp_path, passphrase_file=pw)
    new = create_site(
        cfg, tmp_path / "site" / "site.toml", private_key=read_private_key(key), kdf_iterations=10
    )
    assert not new.generated_passphrase and pw.read_text() == "correct horse\n"
    assert new.identity.address == ANVIL_ADDR_1
    assert site_identity(load_config(new.path)).address == ANVIL_ADDR_1


def test_create_site_refuses_an_existing_site_and_writes_nothing(tmp_path):
    cfg = _cfg(tmp_path)
    path = tmp_path / "site" / "site.toml"
    create_site(cfg, path, kdf_iterations=10)
    before = {p.name: p.read_bytes() for p in (tmp_path / "site" / "keys").iterdir()}
    with pytest.raises(ConfigError, match="already exists"):
        create_site(cfg, path, kdf_iterations=10)
    assert {p.name: p.read_bytes() for p in (tmp_path / "site" / "keys").iterdir()} == before


def test_create_site_refuses_a_bad_task_before_writing(tmp_path):
    bad = tmp_path / "swarm.toml"
    bad.write_text("[task]\nname = 1\n")
    cfg = site_config(tmp_path / "site", "x", bad, rpc_url="http://x", bind="tcp://a:1", endpoint="tcp://a:1")
    with pytest.raises(TaskError):
        create_site(cfg, tmp_path / "site" / "site.toml")
    assert not (tmp_path / "site").exists()


def test_an_unreadable_key_file_is_an_identity_error(tmp_path):
    with pytest.raises(IdentityError, match="cannot read"):
        read_private_key(tmp_path / "missing.hex")


# --- the deploy's admission rule is the task's ----------------------------------------------------------
def _task_file(tmp_path, admission: str):
    from swarmd.ops import task_file
    from swarmd.train import BUNDLES_DIR

    swarm = {"admission": admission, "min_peers": 2}
    return task_file(
        tmp_path / f"{admission}.toml", name="adm", bundle=BUNDLES_DIR / "cxr_densenet", seed=1, swarm=swarm
    )


def _task(tmp_path, admission: str):
    from swarmd.task import load_task

    return load_task(_task_file(tmp_path, admission))


@pytest.mark.parametrize(
    ("admission", "flag", "refused"),
    [("admin", True, "--majority"), ("majority", False, "--admin")],
)
def test_a_deploy_flag_against_the_tasks_admission_is_refused_by_name(tmp_path, admission, flag, refused):
    task = _task(tmp_path, admission)
    with pytest.raises(AdmissionMismatch) as exc:
        deploy_params(task, majority=flag)
    assert refused in str(exc.value) and f"admission = {admission!r}" in str(exc.value)
    assert isinstance(exc.value, TaskError) and exc.value.hint  # a task error, exit code of its family


def test_without_a_flag_or_with_an_agreeing_one_the_task_decides(tmp_path):
    assert admission_majority(_task(tmp_path, "majority"), None) is True
    assert admission_majority(_task(tmp_path, "majority"), True) is True
    assert admission_majority(_task(tmp_path, "admin"), None) is False
    assert admission_majority(_task(tmp_path, "admin"), False) is False


def test_the_daemon_refuses_a_ledger_whose_admission_disagrees_with_its_task(tmp_path):
    """A ledger deployed before deploy checked the rule: the daemon's start names the disagreement."""
    from swarmd.daemon.site import check_task_binding
    from swarmd.ledger import DeployParams

    task = _task(tmp_path, "admin")

    class Bound:  # the chain's binding, as a ledger reads it
        address = "0x" + "11" * 20

        def binding(self) -> DeployParams:
            return DeployParams(task.hash, b"\1" * 32, 2, 4, 8, majority_admission=True)

    with pytest.raises(TaskError, match="admits members by majority, but the task says admission = 'admin'"):
        check_task_binding(Bound(), task)  # type: ignore[arg-type]


# --- deploy makes the lead a member (a real anvil) ------------------------------------------------------
@pytest.mark.chain
@pytest.mark.parametrize(("admission", "join"), [("majority", True), ("admin", False)])
def test_deploy_makes_the_lead_an_active_member_unless_admin_only(tmp_path, devnet, admission, join):
    from swarmd.ledger import MemberStatus
    from swarmd.ops import deploy_task

    task = _task_file(tmp_path, admission)
    cfg = site_config(
        tmp_path / "lead",
        "lead",
        task,
        rpc_url=devnet.rpc_url,
        bind="tcp://127.0.0.1:7700",
        endpoint="tcp://lead:7700",
    )
    key = devnet.dev_keys[15 if join else 16]
    new = create_site(
        cfg, tmp_path / "lead" / "site.toml", private_key=key, kdf_iterations=DEV_KDF_ITERATIONS
    )
    deployed = deploy_task(cfg, join=join)
    assert deployed.ledger.binding().majority_admission is (admission == "majority")
    me = deployed.ledger.member(new.identity.address)
    if join:
        assert deployed.member == me and me.status is MemberStatus.ACTIVE and me.endpoint == "tcp://lead:7700"
        assert deployed.ledger.site_names() == {new.identity.address: "lead"}
    else:
        assert deployed.member is None and me.status is MemberStatus.NONE
    assert deployed.ledger.admin() == new.identity.address
