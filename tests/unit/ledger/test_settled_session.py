"""The chain client's HTTP session reads requests' environment settings once, when it is made, and the
same ones requests would have read on every request: the proxy for the node's URL (NO_PROXY honoured),
the CA bundle, and ~/.netrc's credentials for the node's host."""

from __future__ import annotations

import pytest

from swarmd.ledger.rpc import settled_session

URL = "https://chain.hospital.example:8545"
_ENV = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "NO_PROXY", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE", "NETRC")


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in _ENV:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)


def test_a_plain_environment_gives_a_plain_session_that_no_longer_reads_it() -> None:
    session = settled_session(URL)
    assert session.proxies == {} and session.verify is True and session.auth is None
    assert session.trust_env is False


def test_the_proxy_for_the_node_is_taken_unless_no_proxy_names_the_node(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.hospital.example:3128")
    assert settled_session(URL).proxies["https"] == "http://proxy.hospital.example:3128"
    monkeypatch.setenv("NO_PROXY", ".hospital.example")
    assert settled_session(URL).proxies == {}


def test_the_ca_bundle_and_the_netrc_credentials_are_taken(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    bundle = tmp_path / "hospital-ca.pem"
    bundle.write_text("not read here\n")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(bundle))
    netrc = tmp_path / "netrc"
    netrc.write_text("machine chain.hospital.example login site-a password s3cret\n")
    netrc.chmod(0o600)
    monkeypatch.setenv("NETRC", str(netrc))
    session = settled_session(URL)
    assert session.verify == str(bundle)
    assert session.auth == ("site-a", "s3cret")
