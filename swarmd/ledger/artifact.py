"""The compiled SwarmLedger artifact shipped as package data (written by scripts/build-contracts).

`load_artifact()` reads swarmd/ledger/artifacts/SwarmLedger.json; `source_hash(dir)` recomputes the
hash of the Solidity sources exactly as contracts/build.js does, so a test can tell a stale artifact.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

from swarmd.errors import LedgerError

ARTIFACT_PATH = Path(__file__).with_name("artifacts") / "SwarmLedger.json"


@dataclass(frozen=True)
class Artifact:
    contract_name: str
    abi: list[dict[str, Any]]
    bytecode: str
    deployed_bytecode: str
    compiler_version: str
    source_hash: str
    sources: tuple[str, ...]


@lru_cache(maxsize=1)
def load_artifact(path: Path = ARTIFACT_PATH) -> Artifact:
    """The packaged artifact; LedgerError when it is missing or malformed (a broken install)."""
    try:
        doc = json.loads(Path(path).read_text())
        return Artifact(
            contract_name=str(doc["contractName"]),
            abi=list(doc["abi"]),
            bytecode=str(doc["bytecode"]),
            deployed_bytecode=str(doc["deployedBytecode"]),
            compiler_version=str(doc["compiler"]["version"]),
            source_hash=str(doc["sourceHash"]),
            sources=tuple(doc["sources"]),
        )
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise LedgerError(
            f"contract artifact {path} is missing or malformed: {exc}",
            hint="reinstall swarmd, or run scripts/build-contracts in a checkout",
        ) from exc


def source_hash(contracts_dir: Path, sources: tuple[str, ...]) -> str:
    """sha256 over `name NUL content NUL` for each source, in the artifact's order (as build.js)."""
    h = hashlib.sha256()
    for name in sources:
        h.update(name.encode() + b"\0")
        h.update((contracts_dir / name).read_bytes())
        h.update(b"\0")
    return h.hexdigest()
