"""`swarm bench attack`'s limits and swarm settings, shared by its parts."""

from __future__ import annotations

from typing import TYPE_CHECKING

from swarmd.errors import DaemonError

if TYPE_CHECKING:
    pass


MIB = 1 << 20
FLOOD_FRAMES = 10_000
STRANGER_FRAME = 16 * MIB
RATIO_LIMIT = 1.5  # worst flooded round / mean clean round
RSS_LIMIT_MIB = 32.0
PING_DELAY_LIMIT_MS = 100.0
PARALLEL = 8  # strangers at once in the vector beyond the goal
PING_INTERVAL = 0.02
PING_TIMEOUT = 1.0
WATCH_INTERVAL = 0.02  # the attacker's chain polling, in every round alike

SWARM = {
    "local_steps": 1,
    "min_peers": 3,  # the three daemons: the election waits for each of them...
    "commit_window": 1,  # ...and not a block longer for the attacker, which never commits
    "leader_timeout": 100000,
    "merge": "fedavg",
    "send": "weights",
    "fanout": 3,  # every other member, as fanout 2 is at N = 3 in the round bench
    "eval_every": 0,
}


class BenchFailed(DaemonError):
    """A daemon died or the swarm did not finish in time during the attack benchmark."""
