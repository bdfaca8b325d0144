"""The task a consortium agreed on: a MONAI bundle plus swarm settings (`swarm.toml`).

`Task.hash` is the canonical hash stored on chain as `taskHash`. It covers every swarm setting
and the bytes of every file in the bundle, so two sites with the same task hash train the same
model with the same rules. Paths are not hashed, only relative names and contents.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
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
MERGE_RULES = ("fedavg", "median", "geomedian", "trimmed_mean", "krum")
ADMISSION_MODES = ("admin", "majority")


class WeightKind(str, Enum):
    """What a set of weights is: a whole model, or its difference to the round's base model.

    `swarm.send` says which one a site sends; a trainer's result says which one it produced.
    The value is what swarm.toml says (and what the task hash covers)."""

    WEIGHTS = "weights"
    DIFF = "diff"


REVEAL_WINDOW = 10  # the default `[swarm] reveal_window` (on an instant-block devnet, up to 9 sites reveal
# one block each); a task that keeps it keeps the hash it had before the setting existed


KRUM_F = 1  # the default `[swarm] krum_f`; krum_f and krum_m are left out of the task hash at their
KRUM_M = 1  # defaults, so tasks written before Krum existed keep their hash


SCAFFOLD_PREFIX = "__scaffold_c__/"  # reserved tensor names: a SCAFFOLD model's server control variate
# (one per trainable parameter, `SCAFFOLD_PREFIX + name`), and an update's control-variate part


def krum_min_updates(f: int, m: int) -> int:
    """The fewest updates a Krum round can merge: n >= 2f + 3 (Blanchard et al. 2017), and m <= n - f."""
    return max(2 * f + 3, f + m)


@dataclass(frozen=True)
class SwarmSettings:
    rounds: int = 5
    local_steps: int = 10  # optimiser iterations per round at each site
    min_peers: int = 2
    merge: str = "fedavg"
    send: WeightKind = WeightKind.WEIGHTS  # whole weights, or the difference to the previous merged model
    commit_window: int = 20  # blocks after the first commit before elect() may proceed without everyone
    leader_timeout: int = 30  # blocks after an election before reelect() is allowed
    reveal_window: int = REVEAL_WINDOW  # blocks after commits close in which committers reveal their secrets
    fanout: int = 2  # peers the leader pushes the merged model to
    admission: str = "admin"  # who admits and removes members: an admin, or a majority of members
    trim_ratio: float = 0.1  # for trimmed_mean: fraction cut from each end
    krum_f: int = KRUM_F  # for krum: Byzantine sites tolerated (a round needs 2 * krum_f + 3 updates)
    krum_m: int = KRUM_M  # for krum: updates averaged (1: Krum; more: multi-Krum)
    norm_bound: float = 0.0  # max L2 norm of an update's difference to the previous model; 0 disables
    max_update_bytes: int = 1 << 30  # hard cap on an update's size on the wire
    eval_every: int = 1  # evaluate the merged model every N rounds (0: never)
    prox_mu: float = 0.0  # FedProx: mu of the proximal term mu/2 ||w - w_round||^2 (0: off)
    scaffold: bool = False  # SCAFFOLD: control variates correct each local step (Karimireddy et al. 2020)
    local_layers: tuple[str, ...] = ()  # FedBN: "batchnorm" and/or name globs kept at each site, never sent
    personalise_steps: int = 0  # after the last round, each site fine-tunes the final model this many steps


class DPMechanism(str, Enum):
    """Which differential-privacy mechanism a task uses (`[privacy] mechanism`)."""

    NONE = "none"
    SITE = "site"  # DP-FedAvg: each site clips its whole update to L2 norm `clip` and adds Gaussian noise
    SAMPLE = "sample"  # DP-SGD through Opacus: per-sample clipping and noise inside local training


ACCOUNTANTS = ("rdp", "prv")


@dataclass(frozen=True)
class PrivacySettings:
    """`[privacy]` in swarm.toml: secure aggregation and differential privacy (both off by default)."""

    secure_aggregation: bool = False
    threshold: int = 0  # shares needed to recover a site's secret; 0: ceil(2/3) of the neighbourhood
    neighbours: int = 0  # SecAgg+ masking neighbours per site; 0: every other site (a complete graph)
    clip_range: float = 4.0  # each coordinate is clipped to [-clip_range, clip_range] before fixed point
    sample_bound: int = 1 << 16  # largest total sample count a round's sum may carry (fixed-point headroom)
    mechanism: DPMechanism = DPMechanism.NONE
    clip: float = 1.0  # L2 bound C: of the whole update (site) or of each sample's gradient (sample)
    noise_multiplier: float = 0.0  # sigma; 0 with target_epsilon > 0: derived for the planned rounds
    target_epsilon: float = 0.0  # epsilon after `swarm.rounds` rounds, from which sigma is derived
    delta: float = 0.0  # 0: 1 / n_samples**1.1 at each site
    epsilon_budget: float = 0.0  # a site stops committing before it would pass this; 0: no budget
    accountant: str = "rdp"  # rdp or prv (Opacus accountants)


INPUT_NAMES = ("datalist", "dataset_dir", "val_datalist", "val_dataset_dir", "device", "amp")
# A MONAI config id: a variable, or a nested one with `#` (or `::`) between levels (list items by index).
_CONFIG_ID = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:(?:#|::)[A-Za-z0-9_]+)*")
_SET_BY_MONAI_ALGO = ("bundle_root",)  # overwritten after swarmd's overrides: mapping onto it is lost


@dataclass(frozen=True)
class BundleInputs:
    """`[bundle.inputs]`: the bundle variable each of swarmd's inputs sets (default: the same name).

    Model-zoo bundles name their data `data_list_file_path` or `dataset_dir`; mapping swarmd's
    inputs onto them runs such a bundle with no edit to its files."""

    datalist: str = "datalist"
    dataset_dir: str = "dataset_dir"
    val_datalist: str = "val_datalist"
    val_dataset_dir: str = "val_dataset_dir"
    device: str = "device"
    amp: str = "amp"

    def items(self) -> list[tuple[str, str]]:
        """(swarmd input, bundle variable) in INPUT_NAMES order: validation inputs after training ones."""
        return [(name, getattr(self, name)) for name in INPUT_NAMES]

    def renamed(self) -> dict[str, str]:
        """The inputs mapped onto another name (what the task hash covers)."""
        return {name: var for name, var in self.items() if var != name}


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
    _check(s.reveal_window >= 1, "swarm.reveal_window must be >= 1 block")
    _check(s.fanout >= 1, "swarm.fanout must be >= 1")
    _check(0.0 <= s.trim_ratio < 0.5, "swarm.trim_ratio must be in [0, 0.5)")
    _check(s.krum_f >= 0, "swarm.krum_f must be >= 0")
    _check(s.krum_m >= 1, "swarm.krum_m must be >= 1 (1: Krum, more: multi-Krum)")
    need = krum_min_updates(s.krum_f, s.krum_m)
    _check(
        s.merge != "krum" or s.min_peers >= need,
        f"swarm.merge = krum with krum_f = {s.krum_f} and krum_m = {s.krum_m} needs {need} updates a round "
        f"(n >= 2 * krum_f + 3 and krum_m <= n - krum_f), but swarm.min_peers = {s.min_peers} lets a round "
        f"merge with fewer: raise min_peers to {need}, or lower krum_f",
    )
    _check(s.norm_bound >= 0.0, "swarm.norm_bound must be >= 0 (0 disables it)")
    _check(s.max_update_bytes > 0, "swarm.max_update_bytes must be > 0")
    _check(s.eval_every >= 0, "swarm.eval_every must be >= 0")
    _check(s.personalise_steps >= 0, "swarm.personalise_steps must be >= 0 (0: no personalisation)")
    _check(
        math.isfinite(s.prox_mu) and s.prox_mu >= 0.0, f"swarm.prox_mu must be >= 0 (0: off), got {s.prox_mu}"
    )
    _check(
        not s.scaffold or s.merge == "fedavg",
        f'swarm.scaffold needs merge = "fedavg": the server control variate is the mean of every included '
        f"site's control-variate delta, which {s.merge!r} would not take",
    )
    _check(
        not (s.scaffold and s.local_layers),
        "swarm.scaffold cannot run with swarm.local_layers: the control variates cover every trainable "
        "parameter, including the layers FedBN keeps at each site",
    )


def _validate_remedies(swarm: SwarmSettings, p: PrivacySettings) -> None:
    """FedProx and SCAFFOLD against the privacy settings: the combinations that cannot compose."""
    if p.mechanism is DPMechanism.SAMPLE:
        for on, name in ((swarm.prox_mu > 0.0, "prox_mu > 0"), (swarm.scaffold, "scaffold")):
            _check(
                not on,
                f'swarm.{name} cannot run with privacy.mechanism = "sample": Opacus replaces each gradient '
                "with its clipped, noised per-sample sum at the optimizer step, which drops the correction "
                "swarmd adds after backward (and would leave it outside the privacy guarantee)",
            )
    if swarm.scaffold:
        _check(
            not p.secure_aggregation,
            "swarm.scaffold cannot run with privacy.secure_aggregation: the leader only learns the "
            "sample-weighted sum, and the server control variate needs the unweighted mean of the deltas",
        )
        _check(
            p.mechanism is DPMechanism.NONE,
            "swarm.scaffold cannot run with differential privacy: the control-variate delta travels "
            "beside the update, unclipped and without noise, and would leak what DP protects",
        )


def _validate_privacy(p: PrivacySettings, swarm: SwarmSettings) -> None:
    _check(p.threshold >= 0, "privacy.threshold must be >= 0 (0: two thirds of the neighbourhood)")
    _check(
        p.neighbours == 0 or p.neighbours >= 2,
        "privacy.neighbours must be 0 (every other site) or >= 2 (with one neighbour, a pair's masks "
        "would cancel in a sum of two and leak it)",
    )
    _check(p.clip_range > 0.0, "privacy.clip_range must be > 0")
    _check(1 <= p.sample_bound <= 1 << 24, "privacy.sample_bound must be in [1, 2**24]")
    if p.secure_aggregation:
        _check(
            swarm.merge == "fedavg",
            f'privacy.secure_aggregation needs merge = "fedavg": the leader only learns the sum, and '
            f"{swarm.merge!r} needs each update in the clear (swarm.norm_bound, applied by each site before "
            "masking, still bounds an update)",
        )
    if p.mechanism is DPMechanism.NONE:
        return
    numbers = {"clip": p.clip, "noise_multiplier": p.noise_multiplier, "target_epsilon": p.target_epsilon}
    numbers.update(delta=p.delta, epsilon_budget=p.epsilon_budget)
    for key, value in numbers.items():  # TOML allows inf and nan, which no guarantee survives
        _check(math.isfinite(value), f"privacy.{key} must be a finite number, got {value}")
    _check(p.clip > 0.0, "privacy.clip must be > 0")
    _check(p.noise_multiplier >= 0.0, f"privacy.noise_multiplier must be >= 0, got {p.noise_multiplier}")
    _check(p.target_epsilon >= 0.0, f"privacy.target_epsilon must be >= 0, got {p.target_epsilon}")
    _check(
        (p.noise_multiplier > 0.0) != (p.target_epsilon > 0.0),
        "privacy: give exactly one of noise_multiplier (> 0) or target_epsilon (> 0)",
    )
    _check(0.0 <= p.delta < 1.0, f"privacy.delta must be in [0, 1) (0: 1/n**1.1), got {p.delta}")
    _check(p.epsilon_budget >= 0.0, f"privacy.epsilon_budget must be >= 0 (0: none), got {p.epsilon_budget}")
    _check(
        p.epsilon_budget == 0.0 or p.target_epsilon <= p.epsilon_budget,
        f"privacy.target_epsilon {p.target_epsilon} exceeds privacy.epsilon_budget {p.epsilon_budget}",
    )
    _check(p.accountant in ACCOUNTANTS, f"privacy.accountant must be one of {', '.join(ACCOUNTANTS)}")


def _parse_inputs(raw: object) -> BundleInputs:
    """`[bundle]` (only `inputs` so far): each known input mapped to a MONAI config id."""
    if not isinstance(raw, dict):
        raise TaskError("[bundle] must be a table")
    unknown = set(raw) - {"inputs"}
    _check(not unknown, f"[bundle]: unknown key(s) {', '.join(sorted(unknown))}")
    inputs = raw.get("inputs", {})
    _check(isinstance(inputs, dict), "[bundle.inputs] must be a table")
    bad = set(inputs) - set(INPUT_NAMES)
    _check(
        not bad,
        f"[bundle.inputs]: unknown input(s) {', '.join(sorted(bad))}; swarmd sets {', '.join(INPUT_NAMES)}",
    )
    for key, var in inputs.items():
        _check(
            isinstance(var, str) and _CONFIG_ID.fullmatch(var) is not None,
            f'[bundle.inputs].{key} must name a bundle config variable (e.g. "data_list_file_path" '
            f'or "train#dataset#data"), got {var!r}',
        )
        _check(
            var not in _SET_BY_MONAI_ALGO, f"[bundle.inputs].{key}: {var!r} is set by MONAI's runner itself"
        )
    mapped = BundleInputs(**inputs)
    owners: dict[str, str] = {}
    for key, var in mapped.items():
        other = owners.setdefault(var, key)
        # One variable may serve an input and its validation twin: the training workflow sets both
        # to the same file, the evaluation workflow sets the validation one last.
        _check(
            other == key or other == key.removeprefix("val_"),
            f"[bundle.inputs]: {other} and {key} both set {var!r}",
        )
    return mapped


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


def _local_layers(raw: dict[str, Any]) -> dict[str, tuple[str, ...]]:
    """`swarm.local_layers`: one string or a list of them, as a tuple (absent: nothing)."""
    if "local_layers" not in raw:
        return {}
    value = raw["local_layers"]
    items = [value] if isinstance(value, str) else value
    _check(
        isinstance(items, list) and all(isinstance(x, str) and x.strip() for x in items) and bool(items),
        '[swarm].local_layers must be "batchnorm", a name pattern, or a non-empty list of them, '
        f"got {value!r}",
    )
    return {"local_layers": tuple(dict.fromkeys(items))}


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
    unknown = set(data) - {"task", "swarm", "privacy", "bundle"}
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
        "swarm": _hashed_swarm(task.swarm),
        "privacy": asdict(task.privacy),  # delta, the noise and the masking rules are part of the agreement
        "bundle": _bundle_digest(task.bundle),
    }
    renamed = task.inputs.renamed()
    if renamed:  # left out when empty, so tasks that map nothing keep the hash they had
        doc["bundle_inputs"] = renamed
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
    if "local_layers" in doc:
        doc["local_layers"] = list(s.local_layers)
    return doc


def task_hash(task: Task) -> bytes:
    return hashlib.sha256(canonical_task(task)).digest()
