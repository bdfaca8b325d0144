"""Metrics scraped over real HTTP from start_metrics_server, and parsed with prometheus' own parser."""

from __future__ import annotations

import socket
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from swarmd.daemon.metrics import MAX_LABEL_VALUES, Metrics, parse_bind, start_metrics_server
from swarmd.errors import ConfigError, DaemonError


@pytest.fixture
def served():
    metrics = Metrics()
    server = start_metrics_server("127.0.0.1:0", metrics)
    assert server is not None
    yield metrics, server
    server.stop()


def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """(sample name, sorted labels) -> value, from the live endpoint."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        assert resp.status == 200
        text = resp.read().decode("utf-8")
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def test_a_round_shows_up_on_the_endpoint(served):
    metrics, server = served
    metrics.set_round(3)
    metrics.observe_phase("train", 12.5)
    metrics.observe_phase("train", 0.2)
    metrics.observe_phase("exchange", 0.7)
    metrics.election()
    metrics.reelection()
    metrics.led()
    metrics.rejection("norm")
    metrics.rejection("norm")
    metrics.rejection("hash_mismatch")
    metrics.observe_training(640, 0.42)
    metrics.transport_hook("in", 1000)
    metrics.transport_hook("out", 250)
    metrics.transport_hook("out", 5)
    metrics.model_metrics({"accuracy": 0.875, "auc": 0.9})
    metrics.round_done(3)

    got = scrape(server.url)
    assert got[("swarmd_current_round", ())] == 3
    assert got[("swarmd_rounds_completed_total", ())] == 1
    assert got[("swarmd_last_finalized_round", ())] == 3
    assert got[("swarmd_phase_duration_seconds_count", (("phase", "train"),))] == 2
    assert got[("swarmd_phase_duration_seconds_sum", (("phase", "train"),))] == pytest.approx(12.7)
    assert got[("swarmd_phase_duration_seconds_bucket", (("le", "1.0"), ("phase", "train")))] == 1
    assert got[("swarmd_phase_duration_seconds_count", (("phase", "exchange"),))] == 1
    assert got[("swarmd_elections_total", ())] == 1
    assert got[("swarmd_reelections_total", ())] == 1
    assert got[("swarmd_rounds_led_total", ())] == 1
    assert got[("swarmd_rejections_total", (("reason", "norm"),))] == 2
    assert got[("swarmd_rejections_total", (("reason", "hash_mismatch"),))] == 1
    assert got[("swarmd_training_samples_total", ())] == 640
    assert got[("swarmd_training_loss", ())] == pytest.approx(0.42)
    assert got[("swarmd_transport_bytes_total", (("direction", "in"),))] == 1000
    assert got[("swarmd_transport_bytes_total", (("direction", "out"),))] == 255
    assert got[("swarmd_model_metric", (("name", "accuracy"),))] == 0.875


def test_registries_are_private():
    a, b = Metrics(), Metrics()
    a.election()
    assert b.registry.get_sample_value("swarmd_elections_total") == 0
    assert a.registry.get_sample_value("swarmd_elections_total") == 1


def test_label_values_from_peers_stay_bounded_and_clean():
    m = Metrics()
    for i in range(MAX_LABEL_VALUES + 20):
        m.rejection(f"weird reason {i}\n")
    reasons = {
        s.labels["reason"]
        for family in m.registry.collect()
        if family.name == "swarmd_rejections"
        for s in family.samples
        if s.name.endswith("_total")
    }
    assert len(reasons) == MAX_LABEL_VALUES + 1 and "other" in reasons
    assert all(" " not in r and "\n" not in r for r in reasons)
    assert m.registry.get_sample_value("swarmd_rejections_total", {"reason": "other"}) == 20


def test_odd_inputs_are_ignored_not_raised():
    m = Metrics()
    m.transport_hook("sideways", 10)
    m.transport_hook("in", -5)
    m.observe_phase("train", -1.0)  # a clock stepped back
    m.observe_training(10, None)
    assert m.registry.get_sample_value("swarmd_transport_bytes_total", {"direction": "in"}) is None
    assert m.registry.get_sample_value("swarmd_phase_duration_seconds_count", {"phase": "train"}) is None
    assert m.registry.get_sample_value("swarmd_training_samples_total") == 10


def test_empty_bind_disables_the_server():
    assert start_metrics_server("", Metrics()) is None
    assert start_metrics_server("  ", Metrics()) is None


def test_stop_releases_the_port_and_is_idempotent():
    server = start_metrics_server("127.0.0.1:0", Metrics())
    assert server is not None
    host, port = server.address
    server.stop()
    server.stop()
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))  # free again


def test_a_taken_port_is_a_daemon_error():
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        with pytest.raises(DaemonError, match=f"127.0.0.1:{port}"):
            start_metrics_server(f"127.0.0.1:{port}", Metrics())


def test_ipv6_loopback_when_available():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 in this Python build")
    try:
        server = start_metrics_server("[::1]:0", Metrics())
    except DaemonError as exc:
        pytest.skip(f"IPv6 loopback unavailable here: {exc}")
    assert server is not None
    try:
        assert ("swarmd_current_round", ()) in scrape(server.url)
    finally:
        server.stop()


@pytest.mark.parametrize(
    ("bind", "want"),
    [("127.0.0.1:9477", ("127.0.0.1", 9477)), (":9477", ("0.0.0.0", 9477)), ("[::1]:80", ("::1", 80))],
)
def test_parse_bind(bind, want):
    assert parse_bind(bind) == want


@pytest.mark.parametrize("bind", ["9477", "host:", "host:port", "host:70000", "::1:80"])
def test_parse_bind_rejects(bind):
    with pytest.raises(ConfigError):
        parse_bind(bind)


def test_the_transports_rejections_are_mirrored_by_their_increase(served):
    metrics, server = served
    seen = metrics.transport_rejections({"rate": 3, "not_committer": 1}, {})
    seen = metrics.transport_rejections({"rate": 5, "not_committer": 1, "stalled": 2}, seen)
    metrics.rejection("hash_mismatch")  # the daemon's own refusals land in the same counter
    got = scrape(server.url)
    total = {reason: got[("swarmd_rejections_total", (("reason", reason),))] for reason in seen}
    assert total == {"rate": 5.0, "not_committer": 1.0, "stalled": 2.0}
    assert got[("swarmd_rejections_total", (("reason", "hash_mismatch"),))] == 1.0
