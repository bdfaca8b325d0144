"""The learning bench's poisoned site: what a hostile site sends instead of its honest update.

The bench sends whole weights (`send = "weights"`), so each attack maps the round's starting model
`w` and the site's honestly trained weights `w_i` to the weights it sends; with the honest update
`d = w_i - w`:

- `sign_flip`: `w - d`, the update pointing the other way (Fang et al. 2020's sign-flipping attack);
- `scaled`: `w + 10 d`, the honest direction blown up (a model-replacement style boost);
- `random`: `w + z`, `z` standard Gaussian noise per coordinate, drawn from the (seed, round) it is
  sent in (the "Gaussian" Byzantine update of Blanchard et al. 2017).

Only floating-point tensors are attacked; integer buffers (BatchNorm's step counters) pass as they are.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch

from swarmd.errors import UsageError

ATTACKS = ("sign_flip", "scaled", "random")
SCALE = 10.0
State = dict[str, torch.Tensor]


def poison(
    attack: str, start: Mapping[str, torch.Tensor], trained: Mapping[str, torch.Tensor], *, seed: int = 0
) -> State:
    """The weights a site running `attack` sends, from the round's `start` and its honest `trained` ones."""
    if attack not in ATTACKS:
        raise UsageError(f"unknown attack {attack!r}", hint=f"choose one of {', '.join(ATTACKS)}")
    gen = torch.Generator().manual_seed(seed)
    out: State = {}
    for name in sorted(trained):  # sorted: the random draw does not depend on the dict's order
        w, wi = start[name], trained[name]
        if not wi.is_floating_point():
            out[name] = wi.clone()
        elif attack == "sign_flip":
            out[name] = w - (wi - w)
        elif attack == "scaled":
            out[name] = w + SCALE * (wi - w)
        else:
            noise = torch.randn(wi.shape, generator=gen, dtype=torch.float32).to(wi.dtype)
            out[name] = w + noise
    return out
