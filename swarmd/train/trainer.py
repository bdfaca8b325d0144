"""Local training behind monai.fl's ClientAlgo lifecycle: the `Trainer` interface and `BundleTrainer`.

`Trainer` is the ClientAlgo lifecycle (initialize, train, evaluate, abort, finalize) with typed
arguments instead of ExchangeObject/extra dicts; the daemon talks only to it. `BundleTrainer`
runs an unchanged MONAI bundle through `monai.fl.client.MonaiAlgo`, exactly as NVIDIA FLARE does,
and adds what a swarm round needs and MonaiAlgo leaves out:

- rounds bounded in iterations (`task.swarm.local_steps`), not epochs: the trainer's epoch length
  is set to the local step count, so MonaiAlgo's "one local epoch" is exactly one round;
- an abort that raises TrainingAborted in the training thread within one iteration (MonaiAlgo's
  abort uses ignite's interrupt, which leaves a half-run engine that the next round would resume);
- checks that MonaiAlgo only warns about: incoming weights must fit the network exactly (no
  partial loads), loss and weights must stay finite;
- evaluation on any datalist (e.g. the shared held-out test set), with one evaluator per datalist
  built once and reused.

The bundle is built once in initialize() and reused every round. Train and evaluate are meant to
run in a worker thread (the daemon uses asyncio.to_thread); abort() may be called from any thread.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from enum import Enum
from pathlib import Path
from typing import Any

import torch

from swarmd.errors import DataError, TrainingAborted, TrainingError
from swarmd.scores import Scores, label_classes, scores_of
from swarmd.task import Task, WeightKind
from swarmd.train.bundle import BundleInfo, read_bundle_info
from swarmd.train.contract import Findings, check_count, check_names, refuse
from swarmd.train.data import Datalist, quiet_monai, read_datalist, validate_datalist
from swarmd.train.device import choose_device, configure_threads
from swarmd.train.private import PrivateParts, make_private
from swarmd.train.remedies import Remedies, split_variate
from swarmd.train.weights import Layout, check_finite, check_layout, detach_from, layout_of


class TrainPhase(str, Enum):
    """What the trainer is doing; mirrors monai.fl's FlPhase so an abort knows what it interrupts."""

    CREATED = "created"
    IDLE = "idle"
    TRAIN = "train"
    EVALUATE = "evaluate"
    FINALIZED = "finalized"


@dataclass(frozen=True)
class TrainResult:
    """One round of local training. `weights` are CPU tensors owned by the caller."""

    weights: dict[str, torch.Tensor]
    weight_type: WeightKind  # DIFF: local minus the global weights the round started from
    n_samples: int  # size of the local training set: the FedAvg weight
    loss: float  # mean training loss over the round's iterations
    metrics: dict[str, float]
    seconds: float
    steps: int = 0  # optimiser iterations actually run


class Trainer(ABC):
    """The ClientAlgo lifecycle with typed arguments. Implementations own their model and data."""

    @abstractmethod
    def initialize(self) -> None: ...

    @abstractmethod
    def train(self, global_weights: dict[str, torch.Tensor], round: int) -> TrainResult: ...

    @abstractmethod
    def evaluate(self, weights: dict[str, torch.Tensor], data_list: Path | None = None) -> Scores: ...

    def personalise(self, weights: dict[str, torch.Tensor], steps: int, round: int) -> TrainResult:
        """Fine-tune `weights` for `steps` iterations (`swarm.personalise_steps`, after the last round);
        the result is whole weights, kept at the site."""
        raise TrainingError(f"{type(self).__name__} cannot personalise a model")

    @abstractmethod
    def abort(self) -> None: ...

    @abstractmethod
    def finalize(self) -> None: ...


def _loss_of(output: Any) -> float:
    """The loss of one iteration, whether the trainer decollates its output or not."""
    from monai.handlers import from_engine

    loss = from_engine(["loss"], first=True)(
        output
    )  # a 1-tuple from a dict, the value from a decollated list
    loss = loss[0] if isinstance(loss, tuple) else loss
    return float(loss.item() if isinstance(loss, torch.Tensor) else loss)


def _batch_size(batch: Any) -> int:
    if isinstance(batch, list):  # decollated (the engine's default): one dict per sample
        return len(batch)
    image = batch.get("image") if isinstance(batch, dict) else None
    return int(image.shape[0]) if isinstance(image, torch.Tensor) else 0


def _finite_floats(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            f = float(v)
        except (TypeError, ValueError):
            continue  # non-scalar metric (e.g. a per-class tensor): not reported
        if math.isfinite(f):
            out[str(k)] = f
    return out


class BundleTrainer(Trainer):
    """Runs `task.bundle` through MonaiAlgo on the datalist `data_list` (Decathlon JSON).

    The bundle exposes `datalist` and `dataset_dir` (and `val_datalist`, `val_dataset_dir`) as
    config variables, or the names the task's `[bundle.inputs]` maps them to; swarmd points them at
    the site's files, and refuses a bundle that does not read them (`train.contract`). Relative
    image paths in a datalist start at the datalist's directory.
    """

    def __init__(
        self,
        task: Task,
        data_list: Path,
        *,
        device: str = "auto",
        amp: bool = False,
        threads: int = 0,
        workdir: Path,
        name: str = "site",
    ) -> None:
        self.task = task
        self.data_list = Path(data_list).resolve()
        self.device_pref = device
        self.amp = amp
        self.threads = threads
        self.workdir = Path(workdir)
        self.name = name
        self.phase = TrainPhase.CREATED
        self.device: torch.device | None = None
        self.info: BundleInfo | None = None
        self._algo: Any = None  # monai.fl.client.MonaiAlgo for training
        self._evaluators: dict[Path, Any] = {}  # datalist -> eval-only MonaiAlgo
        self._validated: set[tuple[Path, str]] = set()
        self._layout: Layout = {}
        self._net_layout: Layout = {}
        self._n_train = 0
        self._abort = threading.Event()
        self._busy = threading.Lock()  # one train/evaluate at a time
        self._losses: list[float] = []
        self._samples = 0
        self._failure: str | None = None
        self._batch_size = 0
        self._private: PrivateParts | None = None
        self._remedies = Remedies(task.swarm, self.workdir)  # FedProx, SCAFFOLD
        self.contract = Findings()  # the bundle contract's warnings (known after initialize())

    @property
    def n_train(self) -> int:
        """Training items the bundle loads, equal to the site's datalist's (known after initialize())."""
        return self._n_train

    @property
    def batch_size(self) -> int:
        """Batch size of the bundle's training loader (DP-SGD's expected batch); known after initialize()."""
        return self._batch_size

    @property
    def progress(self) -> int:
        """Iterations finished in the current (or last) round; safe to read from any thread."""
        return len(self._losses)

    # --- lifecycle ------------------------------------------------------------------------------

    def initialize(self) -> None:
        """Validate the site's data, build the bundle once. Raises DataError / TrainingError."""
        with self._busy:
            self.workdir.mkdir(parents=True, exist_ok=True)
            configure_threads(self.threads)
            self.device = choose_device(self.device_pref)
            self.info = read_bundle_info(self.task.bundle)
            datalist = self._validate(self.data_list, "training")
            self.contract = check_names(self.task, self._overrides(self.data_list), [self.data_list])
            try:
                self._algo = self._build_algo(train=True, val_datalist=self.data_list)
            except TrainingError as exc:
                refuse(self.task, self.contract, cause=exc)  # a bundle reading other data often fails so
                raise
            trainer = self._algo.trainer
            # The fedavg weight is what the bundle loads, checked to be the site's datalist.
            self._n_train = check_count(self.task, trainer, datalist, self.contract)
            # One MonaiAlgo "local epoch" becomes exactly local_steps iterations; ignite restarts
            # the data iterator by itself when a small site's data runs out mid-round.
            trainer.state.epoch_length = self.task.swarm.local_steps
            self._batch_size = int(getattr(trainer.data_loader, "batch_size", 0) or 0)
            self._attach(trainer)
            variate = self._remedies.attach(trainer, trainer.network)
            self._net_layout = layout_of(self._network_state())
            self._layout = {**self._net_layout, **layout_of(variate)}  # SCAFFOLD's c travels in the model
            self.phase = TrainPhase.IDLE

    def make_private(self, *, noise_multiplier: float, max_grad_norm: float, sample_rate: float) -> None:
        """Train with DP-SGD (per-sample clip C, noise sigma, Poisson rate q); call before the first round."""
        with self._busy:
            self._require_ready()
            if self._algo.trainer.state.iteration:
                raise TrainingError("DP-SGD must be on before the first round: the engine holds its loader")
            if self._private is None:
                self._private = make_private(
                    self._algo.trainer,
                    noise_multiplier=noise_multiplier,
                    max_grad_norm=max_grad_norm,
                    sample_rate=sample_rate,
                )

    def train(self, global_weights: dict[str, torch.Tensor], round: int) -> TrainResult:
        """Train `task.swarm.local_steps` iterations from `global_weights`; thread-safe, abortable."""
        with self._busy:
            try:
                self._require_ready()
                check_layout(global_weights, self._layout, f"round {round} starting weights")
                check_finite(global_weights, f"round {round} starting weights")
                self._losses, self._samples, self._failure = [], 0, None
                start = time.perf_counter()
                self.phase = TrainPhase.TRAIN
                self._run_round(self._remedies.start(global_weights, round))
                weights, weight_type = self._collect()
                weights = self._remedies.finish(weights, weight_type, self._algo.trainer, len(self._losses))
                loss = sum(self._losses) / len(self._losses)
                return TrainResult(
                    weights=weights,
                    weight_type=weight_type,
                    n_samples=self._n_train,
                    loss=loss,
                    metrics=self._train_metrics(),
                    seconds=time.perf_counter() - start,
                    steps=len(self._losses),
                )
            finally:
                self._done()

    def personalise(self, weights: dict[str, torch.Tensor], steps: int, round: int) -> TrainResult:
        """`steps` iterations from `weights` (one round of another length); later rounds keep theirs."""
        self._require_ready()
        state = self._algo.trainer.state
        keep, state.epoch_length = state.epoch_length, steps
        try:
            result = self.train(weights, round)
        finally:
            state.epoch_length = keep
        if result.weight_type == WeightKind.DIFF:
            whole = {k: (weights[k] + d).to(weights[k].dtype) for k, d in result.weights.items()}
            result = replace(result, weights=whole, weight_type=WeightKind.WEIGHTS)
        return result

    def evaluate(self, weights: dict[str, torch.Tensor], data_list: Path | None = None) -> Scores:
        """Metrics of `weights` on the 'validation' section of `data_list` (default: the site's own); a
        metric the split cannot define (AUC on one class) is reported as its reason, not dropped."""
        with self._busy:
            try:
                self._require_ready()
                target = Path(data_list).resolve() if data_list is not None else self.data_list
                if self.task.swarm.scaffold:  # the server control variate is no part of the network
                    weights, _ = split_variate(weights)
                check_layout(weights, self._net_layout, "weights to evaluate")
                check_finite(weights, "weights to evaluate")
                datalist = self._validate(target, "validation")
                self.phase = TrainPhase.EVALUATE
                return scores_of(self._run_eval(weights, datalist), n_classes=label_classes(datalist.items))
            finally:
                self._done()

    def abort(self) -> None:
        """Make the train()/evaluate() in flight raise TrainingAborted after its current iteration.

        Callable from any thread. A call that is queued behind the lock (e.g. submitted to an
        executor but not started yet) is aborted too, as it starts; so is the next call when
        nothing is running, which is what a caller that lost a race with completion wants.
        """
        self._abort.set()

    def _done(self) -> None:
        # An abort is consumed by the call it stopped (or that finished despite it).
        self._abort.clear()
        self.phase = TrainPhase.IDLE

    def finalize(self) -> None:
        with self._busy:
            for algo in [self._algo, *self._evaluators.values()]:
                if algo is not None:
                    algo.finalize()
            self._evaluators.clear()
            self._algo = None
            self.phase = TrainPhase.FINALIZED

    # --- building -------------------------------------------------------------------------------

    def _validate(self, path: Path, section: str) -> Any:
        if self.info is None:
            raise TrainingError("trainer is not initialized")
        datalist = read_datalist(path, section)
        if (path, section) not in self._validated:
            validate_datalist(
                datalist, self.info.input, label_kind=self.info.label_kind, n_classes=self.info.n_classes
            )
            self._validated.add((path, section))
        return datalist

    def _overrides(self, val_datalist: Path) -> dict[str, Any]:
        """swarmd's inputs, set on the bundle variables `[bundle.inputs]` names (validation ones last)."""
        dev = self.device or torch.device("cpu")
        values = {
            "datalist": str(self.data_list),
            "dataset_dir": str(self.data_list.parent),
            "val_datalist": str(val_datalist),
            "val_dataset_dir": str(val_datalist.parent),
            "device": f"$torch.device('{dev}')",
            "amp": bool(self.amp and dev.type == "cuda"),
        }
        return {var: values[name] for name, var in self.task.inputs.items()}

    def _build_algo(self, *, train: bool, val_datalist: Path) -> Any:
        from monai.fl.client import MonaiAlgo
        from monai.fl.utils.constants import ExtraItems

        overrides = self._overrides(val_datalist)
        algo = MonaiAlgo(
            bundle_root=str(self.task.bundle),
            local_epochs=1,
            send_weight_diff=self.task.swarm.send == WeightKind.DIFF,
            config_train_filename=self.task.train_config if train else None,
            train_kwargs=dict(overrides),
            config_evaluate_filename=None if train else [self.task.train_config, self.task.eval_config],
            eval_kwargs=dict(overrides),
            disable_ckpt_loading=True,
            best_model_filepath=None,
            final_model_filepath=None,
        )
        try:
            quiet_monai()
            with warnings.catch_warnings():
                # MONAI warns that a bundle config is code; swarmd only runs bundles whose bytes
                # match the task hash the consortium put on chain.
                warnings.filterwarnings("ignore", message="executing the bundle config")
                warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
                algo.initialize(
                    extra={ExtraItems.CLIENT_NAME: self.name, ExtraItems.APP_ROOT: str(self.workdir)}
                )
        except (DataError, TrainingError):
            raise
        except Exception as exc:  # a bundle is arbitrary code; whatever it raises becomes one error
            raise TrainingError(f"bundle {self.task.bundle} failed to initialize: {exc}") from exc
        return algo

    def _attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_iteration)

    def _on_iteration(self, engine: Any) -> None:
        # Runs in the training thread. Failures terminate the run here and are raised after it,
        # so the engine ends cleanly instead of unwinding through ignite's exception events.
        loss = _loss_of(engine.state.output)
        if not math.isfinite(loss):
            self._failure = f"non-finite loss {loss} at iteration {len(self._losses) + 1}"
            engine.terminate()
            return
        self._losses.append(loss)
        self._samples += _batch_size(engine.state.batch)
        if self._abort.is_set():
            engine.terminate()

    def _on_eval_iteration(self, engine: Any) -> None:
        if self._abort.is_set():
            engine.terminate()

    # --- running --------------------------------------------------------------------------------

    def _require_ready(self) -> None:
        if self.phase is TrainPhase.CREATED or self._algo is None:
            raise TrainingError("trainer is not initialized", hint="call initialize() first")

    def _network_state(self) -> dict[str, torch.Tensor]:
        from monai.networks.utils import get_state_dict

        return get_state_dict(self._algo.trainer.network)

    def _run_round(self, global_weights: dict[str, torch.Tensor]) -> None:
        from monai.fl.utils.constants import WeightType
        from monai.fl.utils.exchange_object import ExchangeObject

        if self._abort.is_set():
            raise TrainingAborted("aborted before training started")
        state = self._algo.trainer.state
        # An aborted round stops mid-epoch; start the next one on an epoch boundary so that
        # MonaiAlgo's "epoch + 1" is again exactly local_steps iterations.
        state.iteration = state.epoch * state.epoch_length
        try:
            self._algo.train(ExchangeObject(weights=global_weights, weight_type=WeightType.WEIGHTS))
        except Exception as exc:  # a bundle is arbitrary code; whatever it raises becomes one error
            raise TrainingError(f"local training failed: {type(exc).__name__}: {exc}") from exc
        if self._abort.is_set():
            raise TrainingAborted("aborted")
        if self._failure is not None:
            # Adam's moments now hold NaNs too; drop them so the next round can recover.
            self._algo.trainer.optimizer.state.clear()
            raise TrainingError(self._failure, hint="lower the learning rate or check the data")
        if not self._losses:
            raise TrainingError("the round ran no iterations", hint="is the training datalist empty?")

    def _collect(self) -> tuple[dict[str, torch.Tensor], WeightKind]:
        from monai.fl.utils.constants import WeightType

        exchange = self._algo.get_weights()
        weight_type = (
            WeightKind.DIFF if exchange.weight_type == WeightType.WEIGHT_DIFF else WeightKind.WEIGHTS
        )
        weights = detach_from(exchange.weights, self._network_state())
        check_finite(weights, "trained weights")
        return weights, weight_type

    def _train_metrics(self) -> dict[str, float]:
        metrics = _finite_floats(dict(self._algo.trainer.state.metrics or {}))
        metrics["train_loss"] = sum(self._losses) / len(self._losses)
        metrics["samples_seen"] = float(self._samples)
        return metrics

    def _evaluator_for(self, datalist: Datalist) -> Any:
        target = datalist.path
        algo = self._evaluators.get(target)
        if algo is None:
            algo = self._build_algo(train=False, val_datalist=target)
            check_count(self.task, algo.evaluator, datalist)  # evaluates the list it is given, all of it
            self._attach_eval(algo.evaluator)
            self._evaluators[target] = algo
        return algo

    def _attach_eval(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self._on_eval_iteration)

    def _run_eval(self, weights: dict[str, torch.Tensor], datalist: Datalist) -> dict[str, Any]:
        from monai.fl.utils.constants import WeightType
        from monai.fl.utils.exchange_object import ExchangeObject

        if self._abort.is_set():
            raise TrainingAborted("aborted before evaluation started")
        target = datalist.path
        algo = self._evaluator_for(datalist)
        try:
            result = algo.evaluate(ExchangeObject(weights=weights, weight_type=WeightType.WEIGHTS))
        except Exception as exc:  # a bundle is arbitrary code; whatever it raises becomes one error
            raise TrainingError(f"evaluation on {target} failed: {type(exc).__name__}: {exc}") from exc
        if self._abort.is_set():
            raise TrainingAborted("aborted")
        return dict(result.metrics or {})
