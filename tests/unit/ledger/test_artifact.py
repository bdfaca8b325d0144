"""The committed contract artifact is fresh: its source hash matches contracts/*.sol, both copies are
identical, every custom error in its ABI has a Python exception of the same name (less the contract
prefix), and the interface documents every error, event and function (NatSpec)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from swarmd.errors import ContractRevert
from swarmd.ledger import errors
from swarmd.ledger.artifact import ARTIFACT_PATH, load_artifact, source_hash

ROOT = Path(__file__).resolve().parents[3]
CONTRACTS = ROOT / "contracts"


def test_artifact_matches_sources() -> None:
    art = load_artifact()
    assert art.source_hash == source_hash(CONTRACTS, art.sources), (
        "contracts/*.sol changed since the artifact was built: run scripts/build-contracts and commit"
    )
    assert art.compiler_version.startswith("0.8.")
    assert art.bytecode.startswith("0x6") and len(art.deployed_bytecode) > 1000


def test_both_artifact_copies_are_identical() -> None:
    build = CONTRACTS / "build" / "SwarmLedger.json"
    assert build.read_bytes() == ARTIFACT_PATH.read_bytes(), "run scripts/build-contracts"


def test_compiler_pin_matches_artifact() -> None:
    pinned = json.loads((CONTRACTS / "package.json").read_text())["devDependencies"]["solc"]
    assert load_artifact().compiler_version.startswith(pinned + "+")


def test_every_abi_error_has_a_named_python_exception() -> None:
    abi_errors = {e["name"] for e in load_artifact().abi if e["type"] == "error"}
    assert abi_errors == set(errors.REVERT_CLASSES)
    for name in abi_errors:
        assert name.startswith(errors.SOLIDITY_PREFIX), f"{name} lacks the contract prefix"
        short = errors.unprefixed(name)
        cls = getattr(errors, short)
        assert errors.REVERT_CLASSES[name] is cls and cls.solidity_name == name
        assert issubclass(cls, ContractRevert) and cls.__name__ == short
        assert cls().error_name == short
        assert cls().hint, f"{name} needs a hint for the operator"


@pytest.mark.slow
@pytest.mark.skipif(
    shutil.which("node") is None or not (CONTRACTS / "node_modules" / "solc").is_dir(),
    reason="needs node and contracts/node_modules (scripts/bootstrap)",
)
def test_recompiling_reproduces_the_artifact() -> None:
    proc = subprocess.run(
        [str(ROOT / "scripts" / "build-contracts"), "--check"], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr


def _declarations(source: str) -> list[tuple[str, str, str]]:
    """(kind, name, the /// block above it) for every error, event and function declared in `source`."""
    out, doc = [], []
    for line in source.splitlines():
        text = line.strip()
        if text.startswith("///"):
            doc.append(text[3:].strip())
            continue
        match = re.match(r"(error|event|function) (\w+)\(", text)
        if match:
            out.append((match[1], match[2], " ".join(doc)))
        doc = []
    return out


# Public constants of the implementation: documented where they are declared, not in the interface.
_CONSTANTS = {"MAX_COMMITTERS", "MAX_PENDING"}


def test_interface_documents_every_error_event_and_function() -> None:
    found = _declarations((CONTRACTS / "ISwarmLedger.sol").read_text())
    abi = {(e["type"], e["name"]) for e in load_artifact().abi if e["type"] in ("error", "event", "function")}
    assert {(kind, name) for kind, name, _ in found} >= abi - {("function", c) for c in _CONSTANTS}
    for kind, name, doc in found:
        assert "@notice" in doc, f"{kind} {name} has no @notice"
        if kind == "event":
            assert "Emitted when" in doc, f"event {name}: say when it is emitted"
    mutating = {
        e["name"]
        for e in load_artifact().abi
        if e["type"] == "function" and e["stateMutability"] == "nonpayable"
    }
    for kind, name, doc in found:
        if kind == "function" and name in mutating:
            assert "Requirements:" in doc and "Emits {" in doc, f"{name}: document requirements and events"
            # Each error a function names must exist, with the contract's prefix.
            for error in re.findall(r"`(SwarmLedger\w+)`", doc):
                assert ("error", error) in abi, f"{name} documents an unknown error {error}"


def test_implementation_inherits_the_interface_docs() -> None:
    found = _declarations((CONTRACTS / "SwarmLedger.sol").read_text())
    external = {e["name"] for e in load_artifact().abi if e["type"] == "function"} - _CONSTANTS
    for kind, name, doc in found:
        if kind == "function" and name in external:
            assert "@inheritdoc ISwarmLedger" in doc, f"SwarmLedger.{name} should use @inheritdoc"
