"""SCAFFOLD's merge (Karimireddy et al. 2020): FedAvg on the model, the plain mean on the control variates.

A SCAFFOLD model carries the server control variate c under `SCAFFOLD_PREFIX`; an update carries
its site's control-variate part there (the delta `c_i+ - c_i` when the task sends diffs, `c + delta`
when it sends weights). The model's tensors are averaged by sample count like FedAvg; the reserved
ones by the unweighted mean over the included updates, so after `apply_diff` (diffs) or directly
(weights) the merged model holds `c + mean(delta c_i)`: the paper's `c + |S|/N * mean(delta c_i)` with
N taken as the sites that took part in the round (a site that sits a round out moves no variate).
Reproducible as FedAvg is: every fold rounds once in float64, in the caller's address order.
"""

from __future__ import annotations

from swarmd.merge.base import Update
from swarmd.merge.fedavg import FedAvg
from swarmd.task import SCAFFOLD_PREFIX


class Scaffold(FedAvg):
    name = "scaffold"

    def _weight(self, name: str, update: Update) -> int:
        return 1 if name.startswith(SCAFFOLD_PREFIX) else update.n_samples

    def _total(self, name: str) -> float:
        return float(len(self._senders)) if name.startswith(SCAFFOLD_PREFIX) else float(self.total_samples)
