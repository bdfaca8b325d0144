"""site.toml's reachability keys (issue 18), the transport the daemon builds from them, and how the
per-peer paths reach `swarm status` and Prometheus."""

from __future__ import annotations

import dataclasses
import importlib.util
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from swarmd.cli.status_cmd import _paths
from swarmd.config import TransportSection
from swarmd.daemon.metrics import Metrics
from swarmd.daemon.reach import make_transport, peer_paths
from swarmd.errors import ConfigError
from swarmd.identity import create_identity
from swarmd.transport import Node
from swarmd.transport.handler import FetchOnly

PUBLIC = TransportSection(bind="tcp://0.0.0.0:7700", endpoint="tcp://a.example.org:7700")
RELAY = "/dns4/a.example.org/tcp/7702/p2p/16Uiu2HAmTvdaXZtPWoFTjRLTnkfHKE95WFYbwxNf8QxnH1dyEJch"
PRIVATE = TransportSection(
    bind="", endpoint=f"{RELAY}/p2p-circuit/p2p/16Uiu2HAmKPbH9K", reachability="private", relays=RELAY
)


def _check(t: TransportSection) -> None:
    from swarmd.config import _validate_reach

    _validate_reach(t)


def test_the_reachability_keys_are_checked_with_a_named_error() -> None:
    _check(PUBLIC)
    _check(PRIVATE)
    _check(dataclasses.replace(PUBLIC, relay=True, p2p_bind="/ip4/0.0.0.0/tcp/7702"))
    assert dataclasses.replace(PRIVATE, reachability="auto").private  # no tcp:// part: private
    assert not dataclasses.replace(PUBLIC, reachability="auto").private
    bad = [
        (dataclasses.replace(PUBLIC, reachability="nat"), "reachability"),
        (dataclasses.replace(PRIVATE, relays=""), "needs transport.relays"),
        (dataclasses.replace(PUBLIC, relay=True), "needs transport.p2p_bind"),
        (dataclasses.replace(PUBLIC, bind=""), "transport.bind"),
        (dataclasses.replace(PUBLIC, endpoint=f"{RELAY} tcp://a:1"), "starts with its tcp://"),
        (dataclasses.replace(PUBLIC, endpoint="http://a:1"), "transport.endpoint"),
    ]
    for t, message in bad:
        with pytest.raises(ConfigError, match=message):
            _check(t)


def test_a_public_site_without_libp2p_keys_gets_the_plain_zeromq_node(tmp_path: Path) -> None:
    ident = create_identity(tmp_path / "k.json", tmp_path / "curve", "pw", kdf_iterations=1)
    node = make_transport(PUBLIC, ident, FetchOnly("test"), 1 << 20)
    assert type(node) is Node
    assert peer_paths(node) == {}


@pytest.mark.skipif(importlib.util.find_spec("libp2p") is None, reason="the p2p extra is not installed")
def test_a_private_site_gets_a_hybrid_node_without_a_listener(tmp_path: Path) -> None:
    ident = create_identity(tmp_path / "k.json", tmp_path / "curve", "pw", kdf_iterations=1)
    node = make_transport(PRIVATE, ident, FetchOnly("test"), 1 << 20)
    assert type(node).__name__ == "HybridNode"
    assert node.node._bind == "" and node.p2p.config.relays == (RELAY,)  # type: ignore[attr-defined]


def test_peer_paths_show_in_status_and_in_prometheus() -> None:
    paths = {
        "site-c": {"path": "relayed", "bytes_out": {"relayed": 28_000_000}, "bytes_in": {}},
        "site-b": {"path": "zmq", "bytes_out": {"zmq": 1_000_000}, "bytes_in": {"zmq": 2_000_000}},
    }
    assert _paths(paths) == (
        "site-b zmq (out 1.0 MB zmq, in 2.0 MB zmq), site-c relayed (out 28.0 MB relayed)"
    )
    metrics = Metrics()
    metrics.peer_paths(paths)
    text = generate_latest(metrics.registry).decode()
    assert 'swarmd_peer_path{path="relayed",peer="site-c"} 1.0' in text
    assert 'swarmd_peer_path{path="zmq",peer="site-c"} 0.0' in text
    assert 'swarmd_peer_bytes{direction="out",path="relayed",peer="site-c"} 2.8e+07' in text
