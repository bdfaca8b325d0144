"""A local consortium provisioned on the shared real anvil: deployed, every site joined and admitted,
its config and keys usable by a daemon, and the whole recorded for `swarm devnet` and `ledger`."""

from __future__ import annotations

import pytest

from swarmd.config import load_config
from swarmd.daemon.site import check_task_binding, site_identity, site_ledger
from swarmd.errors import ConfigError
from swarmd.ledger import MemberStatus
from swarmd.ops import LocalConsortium, local_consortium
from swarmd.task import load_task
from swarmd.train import example_task_file

pytestmark = [pytest.mark.chain]


def test_every_site_is_an_active_member_with_a_working_config(consortium):
    assert [s.name for s in consortium.sites] == ["site-a", "site-b"]
    for site in consortium.sites:
        cfg = load_config(site.config)
        assert cfg.chain.contract == consortium.contract and cfg.train.device == "cpu"
        assert cfg.site.data_list == site.data_list and cfg.site.eval_list == consortium.test_list
        ident = site_identity(cfg)
        assert ident.address == site.address
        ledger = site_ledger(cfg, ident)
        check_task_binding(ledger, load_task(cfg.site.task))
        member = ledger.member(site.address)
        assert member.status == MemberStatus.ACTIVE and member.endpoint == cfg.transport.endpoint
        assert site.journal == cfg.site.state_dir / "journal.json"
    endpoints = {load_config(s.config).transport.endpoint for s in consortium.sites}
    assert len(endpoints) == 2


def test_the_consortium_is_recorded_and_loads_back(consortium):
    assert LocalConsortium.load(consortium.root) == consortium


def test_a_missing_or_corrupt_record_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no local consortium"):
        LocalConsortium.load(tmp_path)
    (tmp_path / "consortium.json").write_text('{"root": "x"}')
    with pytest.raises(ConfigError, match="unreadable"):
        LocalConsortium.load(tmp_path)


def test_too_few_dev_keys_is_refused_before_anything_is_deployed(devnet, tmp_path):
    with pytest.raises(ConfigError, match="dev keys"):
        local_consortium(
            tmp_path,
            rpc_url=devnet.rpc_url,
            dev_keys=list(devnet.dev_keys[:2]),
            task_path=example_task_file("cxr_densenet"),
            sites=2,
        )
    assert list(tmp_path.iterdir()) == []


def test_sites_bind_and_advertise_the_hosts_they_are_given(devnet, tmp_path):
    # what `swarm bench wan` gives: each site its network namespace's address, nothing on 127.0.0.1
    hosts = ["10.203.0.3", "10.203.0.4"]
    lc = local_consortium(
        tmp_path,
        rpc_url=devnet.rpc_url,
        dev_keys=list(devnet.dev_keys),
        task_path=example_task_file("cxr_densenet"),
        sites=2,
        n_per_site=8,
        n_test=8,
        base_port=7700,
        hosts=hosts,
    )
    for site, host, port in zip(lc.sites, hosts, (7700, 7703), strict=True):
        cfg = load_config(site.config)
        assert cfg.transport.bind == cfg.transport.endpoint == f"tcp://{host}:{port}"
        assert site_ledger(cfg, site_identity(cfg)).member(site.address).endpoint == f"tcp://{host}:{port}"


def test_one_host_per_site_or_none(devnet, tmp_path):
    with pytest.raises(ConfigError, match="1 hosts for 2 sites"):
        local_consortium(
            tmp_path,
            rpc_url=devnet.rpc_url,
            dev_keys=list(devnet.dev_keys),
            task_path=example_task_file("cxr_densenet"),
            sites=2,
            hosts=["10.203.0.3"],
        )
    assert list(tmp_path.iterdir()) == []
