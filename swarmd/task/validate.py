"""Validation of swarm.toml's sections: each check names the key and says what would make it valid."""

from __future__ import annotations

import math
from enum import Enum
from typing import Any

from swarmd.errors import TaskError
from swarmd.task.settings import (
    _CONFIG_ID,
    _SET_BY_MONAI_ALGO,
    ACCOUNTANTS,
    ADMISSION_MODES,
    BATCHNORM_STATS,
    COMPRESSIONS,
    INPUT_NAMES,
    MAX_SHARD_LEAVES,
    MERGE_RULES,
    ROUND_MODES,
    SCAFFOLD_VARIATES,
    SHARD_LEAVES,
    TOPK_RATIO,
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
        s.scaffold_variate in SCAFFOLD_VARIATES,
        f"swarm.scaffold_variate must be one of {', '.join(SCAFFOLD_VARIATES)}, got {s.scaffold_variate!r}",
    )
    _check(
        s.scaffold or s.scaffold_variate == SCAFFOLD_VARIATES[0],
        "swarm.scaffold_variate is set but swarm.scaffold is false: set scaffold = true, or drop the key",
    )
    _check(
        not (s.scaffold and s.local_layers),
        "swarm.scaffold cannot run with swarm.local_layers: the control variates cover every trainable "
        "parameter, including the layers FedBN keeps at each site",
    )
    _check(
        s.batchnorm_stats in BATCHNORM_STATS,
        f"swarm.batchnorm_stats must be one of {', '.join(BATCHNORM_STATS)}, got {s.batchnorm_stats!r}",
    )
    _check(
        s.batchnorm_stats == BATCHNORM_STATS[0] or not s.local_layers,
        'swarm.batchnorm_stats = "merged" cannot run with swarm.local_layers: FedBN keeps normalisation '
        "layers at each site, merged statistics share them across sites; choose one",
    )


def _validate_remedies(swarm: SwarmSettings, p: PrivacySettings) -> None:
    """FedProx, SCAFFOLD and merged BatchNorm statistics against the privacy settings: the combinations
    that cannot compose."""
    _check(
        p.mechanism is DPMechanism.NONE or swarm.batchnorm_stats == BATCHNORM_STATS[0],
        f'swarm.batchnorm_stats = "merged" cannot run with privacy.mechanism = "{p.mechanism.value}": the '
        "statistics are re-estimated from the site's data outside DP-SGD's per-sample clipping, and "
        "site-level noise on a running variance can make it negative",
    )
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


# The rules that merge each coordinate on its own: a leaf of the model merges like the whole.
SHARDABLE_RULES = ("fedavg", "median", "trimmed_mean")


def _validate_exchange(x: ExchangeSettings, swarm: SwarmSettings, privacy: PrivacySettings) -> None:
    _check(
        x.topology in TOPOLOGIES,
        f"exchange.topology must be one of {', '.join(TOPOLOGIES)}, got {x.topology!r}",
    )
    _check(
        1 <= x.leaves <= MAX_SHARD_LEAVES,
        f"exchange.leaves must be a whole number from 1 to {MAX_SHARD_LEAVES}, got {x.leaves!r}",
    )
    if x.topology == "sharded":
        _validate_sharded(x, swarm, privacy)
    else:
        _check(
            x.leaves == SHARD_LEAVES,
            f'exchange.leaves is only used by topology = "sharded", not {x.topology!r}: remove it',
        )
    _check(
        x.compression in COMPRESSIONS,
        f"exchange.compression must be one of {', '.join(COMPRESSIONS)}, got {x.compression!r}",
    )
    _validate_compression(x, swarm)
    _validate_compression_privacy(x, privacy)


def _validate_compression(x: ExchangeSettings, swarm: SwarmSettings) -> None:
    """Compression against the other settings; secure aggregation is `_validate_compression_privacy`'s."""
    _check(
        math.isfinite(x.topk_ratio) and 0.0 < x.topk_ratio <= 1.0,
        f"exchange.topk_ratio must be in (0, 1], got {x.topk_ratio}",
    )
    _check(
        x.compression == "topk" or x.topk_ratio == TOPK_RATIO,
        f'exchange.topk_ratio is only used by compression = "topk", not {x.compression!r}: remove it',
    )
    if x.compression == "none":
        return
    _check(
        swarm.send == WeightKind.DIFF,
        f'exchange.compression = "{x.compression}" needs swarm.send = "diff": a difference to the round\'s '
        "model is small and centred on zero, where casting, 8-bit codes and top-k lose little; whole weights "
        "would lose their precision",
    )
    _check(
        x.compression != "topk" or swarm.merge == "fedavg",
        f'exchange.compression = "topk" needs merge = "fedavg": a sparse update is zero almost everywhere, '
        f"so {swarm.merge!r} would compare (or take the median of) zeros rather than what the sites learned",
    )


def _validate_compression_privacy(x: ExchangeSettings, p: PrivacySettings) -> None:
    _check(
        x.compression == "none" or not p.secure_aggregation,
        f'exchange.compression = "{x.compression}" cannot run with privacy.secure_aggregation: masked '
        "updates are uniform ring elements, which no compression shrinks, and compressing before masking "
        "would need the masks in the compressed domain",
    )


def _validate_sharded(x: ExchangeSettings, swarm: SwarmSettings, privacy: PrivacySettings) -> None:
    _check(
        swarm.merge in SHARDABLE_RULES,
        f'exchange.topology = "sharded" needs a coordinate-wise merge ({", ".join(SHARDABLE_RULES)}): '
        f"{swarm.merge!r} weighs whole updates against each other, which no owner of one shard can do; "
        'keep topology = "leader" for it',
    )
    _check(
        swarm.norm_bound == 0.0,
        'exchange.topology = "sharded" cannot check swarm.norm_bound: the norm is over the whole update and '
        'each owner sees one shard; set norm_bound = 0 or keep topology = "leader"',
    )
    _check(
        not privacy.secure_aggregation,
        'exchange.topology = "sharded" does not compose with privacy.secure_aggregation yet (the masked '
        'sums would shard, but the unmasking is the leader\'s alone): keep topology = "leader"',
    )
    _check(
        x.compression == "none",
        f'exchange.topology = "sharded" does not compose with exchange.compression = "{x.compression}" yet '
        "(the shard root is over the update's own tensors): keep one of them at its default",
    )


def _validate_round(r: RoundSettings, swarm: SwarmSettings, p: PrivacySettings, x: ExchangeSettings) -> None:
    _check(r.mode in ROUND_MODES, f"round.mode must be one of {', '.join(ROUND_MODES)}, got {r.mode!r}")
    _check(
        math.isfinite(r.handoff_timeout) and r.handoff_timeout > 0,
        f"round.handoff_timeout must be > 0 seconds, got {r.handoff_timeout}",
    )
    if r.mode == "cyclic":
        _validate_cyclic(swarm, p, x)


def _validate_cyclic(swarm: SwarmSettings, p: PrivacySettings, x: ExchangeSettings) -> None:
    """What cannot compose with a round in which one model visits the sites in turn and nothing is merged.
    FedProx, FedBN's local layers, DP-SGD and site-level DP (each site noises its own step) compose."""
    refusals = (
        (
            p.secure_aggregation,
            "privacy.secure_aggregation: there is no sum to hide; each site hands its model to the next",
        ),
        (
            swarm.merge != "fedavg",
            f"swarm.merge = {swarm.merge!r}: nothing is merged, so a robust rule has nothing to choose from",
        ),
        (
            swarm.scaffold,
            "swarm.scaffold: its server control variate is a mean over sites, and none is taken",
        ),
        (
            swarm.send is WeightKind.DIFF,
            'swarm.send = "diff": the model itself travels and is committed; its receiver does not hold '
            "the model a difference would be taken against",
        ),
        (
            swarm.norm_bound > 0,
            "swarm.norm_bound: it bounds a site's step from the model it started from, which its receiver "
            "does not hold",
        ),
        (
            x.topology != "leader",
            f'exchange.topology = "{x.topology}": it travels whole from site to site and nothing is merged',
        ),
    )
    for on, why in refusals:
        _check(not on, f'round.mode = "cyclic" cannot run with {why}')
