"""DP-SGD inside local training: Opacus wrapped around an unchanged MONAI bundle's trainer.

`check_private(task)` is task validation: it builds the bundle's network and names every layer Opacus
cannot train privately (BatchNorm mixes the samples of a batch, so a sample's gradient is not its own),
before any training. `make_private(trainer, ...)` swaps three things inside the bundle's ignite
SupervisedTrainer, leaving the bundle's files as they are:

- the network gets Opacus's per-sample-gradient hooks (a GradSampleModule registered on the network's own
  layers, so its state dict keeps the bundle's names and the network object stays the one MonaiAlgo holds);
- the optimiser becomes a DPOptimizer (clip each sample's gradient to C, add N(0, (sigma*C)^2), average);
- the data loader becomes a DPDataLoader: Poisson sampling at the plan's rate, which is what the
  accountant assumes. A step whose sample is empty runs no forward pass (normalisation layers fail on an
  empty batch) but still steps with noise alone, as the mechanism the accountant counts does.

Noise and sampling draw from generators seeded by the OS, never from the task seed: noise that a peer can
replay protects nothing.
"""

from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from swarmd.errors import TaskError, TrainingError
from swarmd.task import DPMechanism, Task
from swarmd.train.bundle import build_network


def unsupported_layers(net: nn.Module) -> list[str]:
    """'name (Type)' of each layer of `net` that Opacus cannot train with per-sample gradients."""
    from opacus.utils.module_utils import trainable_modules
    from opacus.validators import ModuleValidator

    bad: dict[str, str] = {}
    for name, module in net.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):  # even without affine weights
            bad[name] = type(module).__name__
    for name, module in trainable_modules(net):
        validator = ModuleValidator.VALIDATORS.get(type(module))
        if validator is not None and validator(module):
            bad[name] = type(module).__name__
    return [f"{name or '<root>'} ({kind})" for name, kind in bad.items()]


def check_private(task: Task) -> None:
    """Raise TaskError when the task asks for DP-SGD and its network has layers Opacus cannot handle."""
    if task.privacy.mechanism is not DPMechanism.SAMPLE:
        return
    with torch.random.fork_rng(devices=[]):
        net = build_network(task.bundle, task.train_config)
    bad = unsupported_layers(net.train())
    if bad:
        shown = ", ".join(bad[:8]) + (f" and {len(bad) - 8} more" if len(bad) > 8 else "")
        raise TaskError(
            f'privacy.mechanism = "sample" (DP-SGD) cannot train bundle {task.bundle.name}: Opacus cannot '
            f"compute per-sample gradients through {len(bad)} layer(s): {shown}",
            hint='replace BatchNorm with GroupNorm in network_def (in MONAI: norm = ["group", '
            '{"num_groups": 8}]), or use mechanism = "site"',
        )


@dataclass
class PrivateParts:
    """What make_private put in the trainer; `remove()` takes the hooks off the network again."""

    grad_sample: Any  # opacus.GradSampleModule
    optimizer: Any  # opacus.optimizers.DPOptimizer
    data_loader: Any  # opacus.data_loader.DPDataLoader

    def remove(self) -> None:
        self.grad_sample.remove_hooks()


def _no_inplace(net: nn.Module) -> None:
    """Make in-place activations (ReLU(inplace=True), as MONAI's DenseNet has) write a new tensor.

    Opacus's backward hooks hand a layer's output on as a view, which autograd forbids modifying in
    place; the result is the same numbers, only not computed in place."""
    for module in net.modules():
        if getattr(module, "inplace", False) is True:
            module.inplace = False  # type: ignore[assignment]


def _is_3d(net: nn.Module) -> bool:
    """Whether per-sample gradients are cheaper through functorch (vmap) than Opacus's hooks.

    Opacus's Conv3d hook unfolds each input 27-fold (im2col); on the example 3D UNet vmap costs 1.9x a
    plain step on one CPU thread against 3.1x for the hooks, while on the 2D DenseNet the hooks win
    (2.6x against 3.4x)."""
    return any(isinstance(m, nn.Conv3d | nn.ConvTranspose3d) for m in net.modules())


def _batch_len(batch: Any) -> int:
    """Samples in a collated batch; 0 for the empty list Opacus yields when its first draw is empty."""
    if isinstance(batch, list | tuple):
        if not batch:
            return 0
        batch = batch[0]
    image = batch.get("image") if isinstance(batch, dict) else batch
    return int(image.shape[0]) if isinstance(image, torch.Tensor) else -1


def _with_noise_only_steps(process: Any, optimizer: Any) -> Any:
    """The engine's iteration, except that an empty sample makes a step of noise alone."""

    def iteration(engine: Any, batch: Any) -> Any:
        if _batch_len(batch) != 0:
            return process(engine, batch)
        optimizer.zero_grad()
        for p in optimizer.params:  # no sample: every per-sample gradient list is empty
            p.grad_sample = torch.zeros((0, *p.shape), dtype=p.dtype, device=p.device)
        optimizer.step()
        return {"loss": torch.zeros(())}

    return iteration


@functools.cache  # one class; built on first use, as opacus takes a second to import
def _dp_optimizer_class() -> type:
    from opacus.optimizers import DPOptimizer

    class HoistedScaleDPOptimizer(DPOptimizer):
        """Opacus's DPOptimizer, with `scale_grad` reading `accumulated_iterations` once per step.

        Opacus reads that property (a loop over every parameter) once per parameter: quadratic in the
        parameter count, 10% of a DenseNet121 step on the CPU. Same division, same result."""

        def scale_grad(self) -> None:
            if self.loss_reduction == "mean":
                denominator = self.expected_batch_size * self.accumulated_iterations
                for p in self.params:
                    p.grad /= denominator

    return HoistedScaleDPOptimizer


def _os_seeded(device: torch.device) -> torch.Generator:
    g = torch.Generator(device=device)
    g.seed()  # from the OS's entropy source
    return g


def make_private(
    trainer: Any, *, noise_multiplier: float, max_grad_norm: float, sample_rate: float
) -> PrivateParts:
    """Turn the bundle's ignite SupervisedTrainer `trainer` into DP-SGD, in place."""
    from opacus import GradSampleModule
    from opacus.data_loader import DPDataLoader

    if not (noise_multiplier >= 0.0 and max_grad_norm > 0.0 and 0.0 < sample_rate <= 1.0):
        raise TrainingError(
            f"DP-SGD needs sigma >= 0, C > 0 and 0 < q <= 1; got sigma {noise_multiplier}, "
            f"C {max_grad_norm}, q {sample_rate}"
        )
    network, loader = trainer.network, trainer.data_loader
    bad = unsupported_layers(network)
    if bad:
        raise TrainingError(f"Opacus cannot train these layers privately: {', '.join(bad[:8])}")
    _no_inplace(network)
    # The first layer's input needs no gradient, so torch notes at every step that its hook sees only
    # the output's: that is all Opacus's hooks need.
    warnings.filterwarnings("ignore", message="Full backward hook is firing when gradients are computed")
    device = next(network.parameters()).device
    dataset = loader.dataset
    dp_loader = DPDataLoader(
        dataset,
        sample_rate=sample_rate,
        collate_fn=loader.collate_fn,
        generator=_os_seeded(torch.device("cpu")),
        num_workers=loader.num_workers,
    )
    # Opacus builds an empty batch from the first batch it collated, or else from dataset[0] read as a
    # tuple, which a MONAI dict sample is not; so collate one sample now, before any draw can be empty.
    dp_loader.collate_fn([dataset[0]])
    grad_sample = GradSampleModule(
        network, batch_first=True, loss_reduction="mean", force_functorch=_is_3d(network)
    )
    optimizer = _dp_optimizer_class()(
        trainer.optimizer,
        noise_multiplier=noise_multiplier,
        max_grad_norm=max_grad_norm,
        expected_batch_size=max(1, round(sample_rate * len(dataset))),
        loss_reduction="mean",
        generator=_os_seeded(device),
    )
    trainer.optimizer = optimizer
    trainer.data_loader = dp_loader
    trainer._process_function = _with_noise_only_steps(trainer._process_function, optimizer)
    return PrivateParts(grad_sample, optimizer, dp_loader)
