"""The settings a task agrees on: `[swarm]`, `[exchange]`, `[round]`, `[privacy]` and `[bundle.inputs]`.

Plain frozen dataclasses whose defaults are what an absent key means; `swarmd.task.validate` checks them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

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

# How a SCAFFOLD site sets its client variate c_i+ (Karimireddy et al. 2020, eq. 4): "gradient" (option I,
# the default: the mean gradient of the local loss at the round's model, whatever the optimizer) or
# "difference" (option II: from the round's weight change, which assumes plain SGD steps of size lr);
# left out of the task hash at its default
SCAFFOLD_VARIATES = ("gradient", "difference")
BATCHNORM_STATS = ("batch", "merged")  # swarm.batchnorm_stats: the default first


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
    fanout: int = 2  # members each site passes the merged model on to (1: a chain, docs/operator.md)
    admission: str = "admin"  # who admits and removes members: an admin, or a majority of members
    trim_ratio: float = 0.1  # for trimmed_mean: fraction cut from each end
    krum_f: int = KRUM_F  # for krum: Byzantine sites tolerated (a round needs 2 * krum_f + 3 updates)
    krum_m: int = KRUM_M  # for krum: updates averaged (1: Krum; more: multi-Krum)
    norm_bound: float = 0.0  # max L2 norm of an update's difference to the previous model; 0 disables
    max_update_bytes: int = 1 << 30  # hard cap on an update's size on the wire
    eval_every: int = 1  # evaluate the merged model every N rounds (0: never)
    prox_mu: float = 0.0  # FedProx: mu of the proximal term mu/2 ||w - w_round||^2 (0: off)
    scaffold: bool = False  # SCAFFOLD: control variates correct each local step (Karimireddy et al. 2020)
    scaffold_variate: str = SCAFFOLD_VARIATES[0]  # SCAFFOLD: how c_i is updated (`SCAFFOLD_VARIATES`)
    local_layers: tuple[str, ...] = ()  # FedBN: "batchnorm" and/or name globs kept at each site, never sent
    batchnorm_stats: str = BATCHNORM_STATS[0]  # "merged": BatchNorm trains on the round's merged statistics
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


# What each setting can be today; a value joins its list with the code that carries it out.
TOPOLOGIES = ("leader", "sharded")
COMPRESSIONS = ("none", "fp16", "bf16", "int8", "topk")  # swarmd.compress carries them out
TOPK_RATIO = 0.01  # the default `[exchange] topk_ratio`
# `[exchange] leaves` unset: what every sharded round was cut into before the count could be set, so the
# commitments of those rounds still audit. 32 measured better on the WAN bench (docs/benchmarks.md).
SHARD_LEAVES = 64
MAX_SHARD_LEAVES = 256  # the most leaves a plan message may list (transport.shards)
ROUND_MODES = ("swarm", "cyclic")


@dataclass(frozen=True)
class ExchangeSettings:
    """`[exchange]` in swarm.toml: how updates and merged models travel (issue 15)."""

    # "leader": every update goes to the elected leader, which merges and spreads the model; "sharded":
    # every committer merges some leaves of the model and gathers the others (daemon/shards.py)
    topology: str = "leader"
    compression: str = "none"  # updates travel as the model's own dtypes
    topk_ratio: float = TOPK_RATIO  # for compression = "topk": the fraction of each tensor's elements sent
    leaves: int = SHARD_LEAVES  # for topology = "sharded": the model is cut into this many leaves (fewer
    # for a model of fewer elements); part of each commitment, so every site and auditor cuts alike


@dataclass(frozen=True)
class RoundSettings:
    """`[round]` in swarm.toml: how a round runs (issue 16)."""

    mode: str = "swarm"  # every site trains on the same model, the elected leader merges; or "cyclic":
    # the model visits the sites one after another (swarmd.daemon.cyclic)
    handoff_timeout: float = 15.0  # cyclic: seconds a site has to take the model before it is skipped
