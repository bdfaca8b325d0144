"""The committed contract artifact is fresh: its source hash matches contracts/*.sol, both copies are
identical, and every custom error in its ABI has a Python exception of the same name."""

from __future__ import annotations

import json
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
        cls = getattr(errors, name)
        assert issubclass(cls, ContractRevert) and cls.__name__ == name
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
