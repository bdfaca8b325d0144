"""The task a consortium agreed on: a MONAI bundle plus swarm settings (`swarm.toml`).

`Task.hash` is the canonical hash stored on chain as `taskHash`. It covers every swarm setting
and the bytes of every file in the bundle, so two sites with the same task hash train the same
model with the same rules. Paths are not hashed, only relative names and contents.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import Enum
from pathlib import Path
from typing import Any, TypeVar

from swarmd.errors import TaskError

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

T = TypeVar("T")
MERGE_RULES = ("fedavg", "median", "geomedian", "trimmed_mean")
ADMISSION_MODES = ("admin", "majority")


class WeightKind(str, Enum):
    """What a set of weights is: a whole model, or its difference to the round's base model.

    `swarm.send` says which one a site sends; a trainer's result says which one it produced.
    The value is what swarm.toml says (and what the task hash covers)."""

    WEIGHTS = "weights"
    DIFF = "diff"


@dataclass(frozen=True)
class SwarmSettings:
    rounds: int = 5
    local_steps: int = 10  # optimiser iterations per round at each site
    min_peers: int = 2
    merge: str = "fedavg"
    send: WeightKind = WeightKind.WEIGHTS  # whole weights, or the difference to the previous merged model
    commit_window: int = 20  # blocks after the first commit before elect() may proceed without everyone
    leader_timeout: int = 30  # blocks after an election before reelect() is allowed
    fanout: int = 2  # peers the leader pushes the merged model to
    admission: str = "admin"  # who admits and removes members: an admin, or a majority of members
    trim_ratio: float = 0.1  # for trimmed_mean: fraction cut from each end
    norm_bound: float = 0.0  # max L2 norm of an update's difference to the previous model; 0 disables
    max_update_bytes: int = 1 << 30  # hard cap on an update's size on the wire
    eval_every: int = 1  # evaluate the merged model every N rounds (0: never)


@dataclass(frozen=True)
class Task:
    name: str
    root: Path  # directory holding swarm.toml
    bundle: Path  # absolute path of the MONAI bundle directory
    train_config: str
    eval_config: str
    seed: int
    swarm: SwarmSettings

    @property
    def hash(self) -> bytes:
        return task_hash(self)

    @property
    def hash_hex(self) -> str:
        return "0x" + self.hash.hex()


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise TaskError(message)


def _validate_swarm(s: SwarmSettings) -> None:
    _check(s.rounds >= 1, "swarm.rounds must be >= 1")
    _check(s.local_steps >= 1, "swarm.local_steps must be >= 1")
    _check(s.min_peers >= 1, "swarm.min_peers must be >= 1")
    _check(s.merge in MERGE_RULES, f"swarm.merge must be one of {', '.join(MERGE_RULES)}, got {s.merge!r}")
    _check(isinstance(s.send, WeightKind), "swarm.send must be a WeightKind")
    _check(
        s.admission in ADMISSION_MODES,
        f"swarm.admission must be one of {', '.join(ADMISSION_MODES)}, got {s.admission!r}",
    )
    _check(s.commit_window >= 1, "swarm.commit_window must be >= 1 block")
    _check(s.leader_timeout >= 1, "swarm.leader_timeout must be >= 1 block")
    _check(s.fanout >= 1, "swarm.fanout must be >= 1")
    _check(0.0 <= s.trim_ratio < 0.5, "swarm.trim_ratio must be in [0, 0.5)")
    _check(s.norm_bound >= 0.0, "swarm.norm_bound must be >= 0 (0 disables it)")
    _check(s.max_update_bytes > 0, "swarm.max_update_bytes must be > 0")
    _check(s.eval_every >= 0, "swarm.eval_every must be >= 0")


def _member(kind: type[Enum], value: object, name: str) -> Enum:
    """The member of `kind` whose value is `value` (a TOML string)."""
    choices = [str(m.value) for m in kind]
    _check(
        isinstance(value, str) and value in choices,
        f"{name} must be one of {', '.join(choices)}, got {value!r}",
    )
    return kind(value)


def _typed(cls: type, raw: dict[str, Any], section: str) -> Any:
    fields = cls.__dataclass_fields__  # type: ignore[attr-defined]
    unknown = set(raw) - set(fields)
    _check(not unknown, f"[{section}]: unknown key(s) {', '.join(sorted(unknown))}")
    out: dict[str, Any] = {}
    for key, value in raw.items():
        default = fields[key].default
        want = type(default)
        if want is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if issubclass(want, Enum):
            value = _member(want, value, f"{section}.{key}")
        _check(
            isinstance(value, want) and (want is bool or not isinstance(value, bool)),
            f"[{section}].{key} must be {want.__name__}, got {value!r}",
        )
        out[key] = value
    return cls(**out)


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
    unknown = set(data) - {"task", "swarm"}
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
    swarm = _typed(SwarmSettings, swarm_raw, "swarm")
    _validate_swarm(swarm)
    return Task(
        name=task_raw["name"],
        root=root,
        bundle=bundle,
        train_config=train_config,
        eval_config=eval_config,
        seed=seed,
        swarm=swarm,
    )


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
        "swarm": asdict(task.swarm),
        "bundle": _bundle_digest(task.bundle),
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode("utf-8")


def task_hash(task: Task) -> bytes:
    return hashlib.sha256(canonical_task(task)).digest()
