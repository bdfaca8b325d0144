"""The task a consortium agreed on: a MONAI bundle plus swarm settings (`swarm.toml`).

`Task.hash` is the canonical hash stored on chain as `taskHash`. It covers every swarm setting
and the bytes of every file in the bundle, so two sites with the same task hash train the same
model with the same rules. Paths are not hashed, only relative names and contents.
The settings live in `settings`, their checks in `validate`.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, TypeVar

from swarmd.errors import TaskError
from swarmd.task.settings import (
    ACCOUNTANTS,
    ADMISSION_MODES,
    BATCHNORM_STATS,
    COMPRESSIONS,
    INPUT_NAMES,
    KRUM_F,
    KRUM_M,
    MAX_SHARD_LEAVES,
    MERGE_RULES,
    REVEAL_WINDOW,
    ROUND_MODES,
    SCAFFOLD_PREFIX,
    SCAFFOLD_VARIATES,
    SHARD_LEAVES,
    TOPOLOGIES,
    BundleInputs,
    DPMechanism,
    ExchangeSettings,
    PrivacySettings,
    RoundSettings,
    SwarmSettings,
    WeightKind,
    krum_min_updates,
)
from swarmd.task.validate import (
    _check,
    _local_layers,
    _parse_inputs,
    _typed,
    _validate_exchange,
    _validate_privacy,
    _validate_remedies,
    _validate_round,
    _validate_swarm,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
__all__ = [
    "ACCOUNTANTS",
    "ADMISSION_MODES",
    "BATCHNORM_STATS",
    "COMPRESSIONS",
    "INPUT_NAMES",
    "KRUM_F",
    "KRUM_M",
    "MAX_SHARD_LEAVES",
    "MERGE_RULES",
    "REVEAL_WINDOW",
    "ROUND_MODES",
    "SCAFFOLD_PREFIX",
    "SCAFFOLD_VARIATES",
    "SHARD_LEAVES",
    "TOPOLOGIES",
    "BundleInputs",
    "DPMechanism",
    "ExchangeSettings",
    "PrivacySettings",
    "RoundSettings",
    "SwarmSettings",
    "Task",
    "WeightKind",
    "canonical_task",
    "krum_min_updates",
    "load_task",
    "parse_task",
    "task_hash",
]


@dataclass(frozen=True)
class Task:
    name: str
    root: Path  # directory holding swarm.toml
    bundle: Path  # absolute path of the MONAI bundle directory
    train_config: str
    eval_config: str
    seed: int
    swarm: SwarmSettings
    privacy: PrivacySettings = PrivacySettings()
    inputs: BundleInputs = BundleInputs()
    exchange: ExchangeSettings = ExchangeSettings()
    round: RoundSettings = RoundSettings()

    @property
    def hash(self) -> bytes:
        return task_hash(self)

    @property
    def hash_hex(self) -> str:
        return "0x" + self.hash.hex()


def _usable(look: Callable[[], T], path: object) -> T:
    """`look()` at a path named in the file; a path the OS refuses (NUL, too long) is a TaskError."""
    try:
        return look()
    except (OSError, ValueError) as exc:
        raise TaskError(f"path {str(path)[:200]!r} cannot be used: {str(exc)[:200]}") from None


def parse_task(data: dict[str, Any], root: Path) -> Task:
    """Validate a parsed swarm.toml. `root` is the directory that relative paths start from."""
    task_raw = data.get("task")
    if not isinstance(task_raw, dict):
        raise TaskError("missing [task] table")
    unknown = set(data) - {"task", "swarm", "privacy", "bundle", "exchange", "round"}
    _check(not unknown, f"unknown section(s) {', '.join(sorted(unknown))}")
    allowed = {"name", "bundle", "train_config", "eval_config", "seed"}
    bad = set(task_raw) - allowed
    _check(not bad, f"[task]: unknown key(s) {', '.join(sorted(bad))}")
    for key in ("name", "bundle"):
        _check(isinstance(task_raw.get(key), str) and task_raw[key], f"[task].{key} is required (a string)")
    seed = task_raw.get("seed", 0)
    _check(
        isinstance(seed, int) and not isinstance(seed, bool) and seed >= 0, "[task].seed must be an int >= 0"
    )
    bundle = _usable(lambda: (root / task_raw["bundle"]).resolve(), task_raw["bundle"])
    _check(_usable(bundle.is_dir, bundle), f"bundle directory {bundle} does not exist")
    train_config = task_raw.get("train_config", "configs/train.json")
    eval_config = task_raw.get("eval_config", "configs/evaluate.json")
    for cfg in (train_config, eval_config):
        _check(isinstance(cfg, str), "[task] config names must be strings")
        _check(_usable((bundle / cfg).is_file, cfg), f"bundle {bundle} has no {cfg}")
    swarm_raw = data.get("swarm", {})
    _check(isinstance(swarm_raw, dict), "[swarm] must be a table")
    swarm = _typed(SwarmSettings, {**swarm_raw, **_local_layers(swarm_raw)}, "swarm")
    _validate_swarm(swarm)
    privacy_raw = data.get("privacy", {})
    _check(isinstance(privacy_raw, dict), "[privacy] must be a table")
    privacy = _typed(PrivacySettings, privacy_raw, "privacy")
    _validate_privacy(privacy, swarm)
    _validate_remedies(swarm, privacy)
    inputs = _parse_inputs(data.get("bundle", {}))
    exchange = _typed(ExchangeSettings, _table(data, "exchange"), "exchange")
    _validate_exchange(exchange, swarm, privacy)
    round_settings = _typed(RoundSettings, _table(data, "round"), "round")
    _validate_round(round_settings, swarm, privacy, exchange)
    return Task(
        name=task_raw["name"],
        root=root,
        bundle=bundle,
        train_config=train_config,
        eval_config=eval_config,
        seed=seed,
        swarm=swarm,
        privacy=privacy,
        inputs=inputs,
        exchange=exchange,
        round=round_settings,
    )


def _table(data: dict[str, Any], section: str) -> dict[str, Any]:
    raw = data.get(section, {})
    _check(isinstance(raw, dict), f"[{section}] must be a table")
    return raw


def load_task(path: str | os.PathLike[str]) -> Task:
    """Read and validate swarm.toml. Raises TaskError naming the file on any problem."""
    p = Path(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TaskError(f"task file {p} does not exist") from None
    except OSError as exc:
        raise TaskError(f"cannot read task file {p}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise TaskError(f"{p}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except tomllib.TOMLDecodeError as exc:
        raise TaskError(f"{p}: not valid TOML: {exc}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise TaskError(f"{p}: not valid TOML: nested too deeply") from None
    except ValueError as exc:  # an integer past Python's 4300-digit conversion limit
        raise TaskError(f"{p}: not valid TOML: {exc}") from None
    try:
        return parse_task(data, p.resolve().parent)
    except TaskError as exc:
        raise TaskError(f"{p}: {exc}") from None


def _bundle_digest(bundle: Path) -> list[list[str]]:
    """(relative name, sha256) of every regular file, sorted; caches and hidden files excluded."""
    out: list[list[str]] = []
    for f in sorted(bundle.rglob("*")):
        rel = f.relative_to(bundle)
        if not f.is_file() or any(part.startswith(".") or part == "__pycache__" for part in rel.parts):
            continue
        out.append([rel.as_posix(), hashlib.sha256(f.read_bytes()).hexdigest()])
    return out


def canonical_task(task: Task) -> bytes:
    """The exact bytes whose sha256 is the task hash (sorted-key JSON, no whitespace)."""
    doc = {
        "v": 1,
        "name": task.name,
        "seed": task.seed,
        "train_config": task.train_config,
        "eval_config": task.eval_config,
        "swarm": _hashed_swarm(task.swarm),
        "privacy": asdict(task.privacy),  # delta, the noise and the masking rules are part of the agreement
        "bundle": _bundle_digest(task.bundle),
    }
    renamed = task.inputs.renamed()
    if renamed:  # left out when empty, so tasks that map nothing keep the hash they had
        doc["bundle_inputs"] = renamed
    for key, settings, default in (
        ("exchange", task.exchange, ExchangeSettings()),
        ("round", task.round, RoundSettings()),
    ):  # likewise, left out at their defaults
        changed = {k: v for k, v in asdict(settings).items() if v != asdict(default)[k]}
        if changed:  # only the keys set off their defaults, so a new key leaves existing hashes alone
            doc[key] = changed
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def _hashed_swarm(s: SwarmSettings) -> dict[str, Any]:
    doc = asdict(s)
    if s.reveal_window == REVEAL_WINDOW:  # left out at its default, so older tasks keep the hash they had
        del doc["reveal_window"]
    if s.krum_f == KRUM_F and s.krum_m == KRUM_M:  # likewise
        del doc["krum_f"], doc["krum_m"]
    for key in ("prox_mu", "scaffold", "local_layers", "personalise_steps"):  # likewise, off by default
        if not doc[key]:
            del doc[key]
    if s.scaffold_variate == SCAFFOLD_VARIATES[0]:  # likewise
        del doc["scaffold_variate"]
    if s.batchnorm_stats == BATCHNORM_STATS[0]:  # likewise
        del doc["batchnorm_stats"]
    if "local_layers" in doc:
        doc["local_layers"] = list(s.local_layers)
    return doc


def task_hash(task: Task) -> bytes:
    return hashlib.sha256(canonical_task(task)).digest()
