"""The STN / Delta-STN tuner: hyperparameters tuned inside one training run.

Loop (MacKay et al. 2019, Bae & Grosse 2020): ``warmup_steps`` training steps, then alternate
``t_train`` training steps and ``t_val`` validation steps until the training budget is spent.

* **Training step** (weights only): draw ``u' = u + sigma * eps`` (one draw per minibatch, or per
  example with ``per_example``), feed it to the hypernetwork (by default the centred
  ``n(u') - n(u)``, Delta-STN's form) *and* use its values in the real regularisers; minimise the
  regularised training loss.
* **Validation step** (hyperparameters and sigma only): eval mode (no dropout, no noise), the
  unregularised validation loss at a reparameterised draw ``u + sigma * eps`` so that the gradient
  reaches ``u`` and ``sigma`` through the best-response approximation only, minus ``tau`` times
  the entropy of the perturbation distribution.

Hyperparameters understood out of the box (names for :class:`~hptransfer.stn.hyper.HyperSpec`):

=====================  ==========================================================================
``dropout``            rate of every ``nn.Dropout`` of the model (per layer: ``dropout.<path>``,
                       with ``<path>`` the module path in the plain model, e.g. ``dropout.2``)
``weight_decay``       torch AdamW's decoupled weight decay of the weight matrices (classes
                       ``hidden`` and ``output``; ``weight_decay.hidden|output|vector`` per class,
                       ``weight_decay.<path>`` per layer): each step shrinks the effective weights
                       by ``lr * wd``, outside Adam. The value at the proxy (base) width, which
                       ``suggest`` scales with width (``proxy.toml`` carries it).
``l2``                 L2 coefficient on every Linear/Conv2d weight: the training objective gets
                       ``+ c/2 * ||W||^2`` (per layer: ``l2.<path>``; biases excluded). Not an
                       AdamW weight decay (Adam rescales it); a closed form for ridge regression.
``input_noise``        std of Gaussian noise added to (float) inputs
``input_mask``         number of input features zeroed per example (an **integer** hyperparameter)
``augment``            strength of a data augmentation given as ``StnTuner(augment=fn)``:
                       ``fn(x, strength) -> x`` on a training batch (``strength`` a float, or one
                       per example with ``per_example``), e.g. the random rotation/scale/shift of
                       :func:`hptransfer.data.images.augment_images` (the ``glyphs`` task's)
``label_smoothing``    label smoothing of the cross-entropy loss
=====================  ==========================================================================

Discrete hyperparameters: ``integer=True`` specs are relaxed to a continuous value that the
hypernetwork sees; the training step applies stochastic rounding (``floor(v) + Bernoulli(frac v)``,
unbiased for ``v``). Since every built-in hyperparameter acts on training only, the validation
gradient reaches them through the best-response approximation alone, as in the STN paper; no
REINFORCE estimator is needed (nor implemented).

Learning rate: **not tunable**. The best response ``w*(lambda)`` is a property of the training
*objective*; the learning rate is not part of it, so the hypernetwork's response to it is zero and
the validation gradient carries no signal. ``lr`` is refused with that explanation; tune it with
``hptransfer tune`` (Optuna) and let the STN tune the regularisers.

Reproducibility: the tuner draws every random number (perturbations, dropout masks, noise,
minibatch order of :class:`TensorBatches` and of ``DataLoader(shuffle=True)``) from torch's global
generator, and checkpoints store its state, the optimiser states, the step counters and the
position of both data streams, so a killed run resumed from its checkpoint retraces the same
trajectory. A user's data iterable must be deterministic given torch's global RNG state (a
``DataLoader`` with ``num_workers=0``, or workers seeded from the base seed, qualifies).

Example:
    >>> import torch
    >>> from torch import nn
    >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
    <...>
    >>> x, y = torch.randn(64, 4), torch.randint(0, 2, (64,))
    >>> model = nn.Sequential(nn.Linear(4, 16), nn.ReLU(), nn.Dropout(0.1), nn.Linear(16, 2))
    >>> tuner = StnTuner(model, [HyperSpec("dropout", 0.1, 0.0, 0.9)], loss="cross_entropy")
    >>> result = tuner.fit(TensorBatches(x, y, 16), TensorBatches(x, y, 16), steps=8)
    >>> 0.0 < result.values["dropout"] < 0.9
    True
"""

from __future__ import annotations

import io
import math
import os
import signal
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
import torch.autograd.forward_ad as fwad
from torch import nn
from torch.nn import functional as F

from hptransfer.stn.hyper import HyperParams, HyperSpec, base_name
from hptransfer.stn.layers import StnConv2d, StnEmbedding, StnLayer, StnLinear, StnModel, to_stn

PARAM_CLASSES = ("hidden", "output", "vector")

__all__ = [
    "CHECKPOINT_FORMAT",
    "StnCheckpointError",
    "StnConfig",
    "StnDivergedError",
    "StnInterrupted",
    "StnResult",
    "StnRunawayWarning",
    "StnTuner",
    "TensorBatches",
    "adam_kwargs",
    "load_checkpoint",
]

CHECKPOINT_FORMAT = "hptransfer-stn/1"
LossName = str
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def adam_kwargs(device: torch.device) -> dict[str, Any]:
    """The fastest Adam implementation for ``device``: the fused kernel (CPU and CUDA)."""
    return {"fused": True} if device.type in ("cpu", "cuda") else {"foreach": True}


class StnCheckpointError(RuntimeError):
    """A checkpoint that cannot be read or does not belong to this run."""


class StnDivergedError(RuntimeError):
    """A non-finite loss; the message names the step and the last good checkpoint."""


class StnInterrupted(KeyboardInterrupt):
    """Ctrl-C during :meth:`StnTuner.fit`: the run stopped at a step boundary.

    Attributes:
        step: steps done when it stopped.
        checkpoint: the checkpoint written at that step (None without a checkpoint path).
    """

    def __init__(self, step: int, checkpoint: str | None) -> None:
        super().__init__(step, checkpoint)
        self.step, self.checkpoint = step, checkpoint


class StnRunawayWarning(UserWarning):
    """The hyperparameters ran to a bound or the run ended worse than where tuning started."""


@dataclass
class StnConfig:
    """Settings of the alternating loop: one set of defaults, shared by the CLI and the Python API.

    The defaults were chosen for robustness on the ridge known-answer task (from starts 100x below
    and 100x above the optimum every run should end within 0.05 in log of it; measured in
    ``benchmarks/stn_vs_optuna.py``, docs/results-stn.md, which also compares them with the
    original uncentred STN and with Optuna on the built-in ``classify`` task).

    Args:
        lr: Adam learning rate of the model weights (elementwise, response and gates).
        hyper_lr: Adam learning rate of the unconstrained hyperparameters and of ``rho``.
        tau: weight of the entropy bonus (keeps sigma from collapsing; 1e-3 is the papers' range).
        hyper_betas: Adam betas of the hyperparameter optimiser. No momentum by default: the
            hypergradient lags the weights, and momentum made the hyperparameters overshoot.
        t_train, t_val: training and validation steps per cycle (5:1, as in the Delta-STN code).
        warmup_steps: training steps before the first hyperparameter update; ``None``:
            ``warmup_frac`` of the training budget.
        warmup_frac: share of the training budget used for warm-up when ``warmup_steps`` is None.
        delta: centred response (Delta-STN, Bae & Grosse 2020): the hypernetwork sees
            ``n(u') - stopgrad(n(u))`` and its gates start at zero, so the elementwise weights are
            the weights at the current hyperparameters and the gates learn only the slope. The
            default: with the uncentred input of the original STN the response learned almost no
            slope (cosine with the true ``dw*/du`` about 0 on the ridge task), and Adam scaled that
            noise up to full steps; from a start 100x above the optimum it ran to the upper bound.
        linearize: with ``delta``: linearise the output in the response (forward-mode JVP) and
            update base weights on the unperturbed, response weights on the perturbed loss, as in
            the paper. Exact but costs about 4-6x a plain step on small CPU models.
        trust: tracking trust region on hyper steps: a step may move the weights the response
            predicts (``|dW/du| * |du|``, RMS over all conditioned weights) by at most
            ``trust * lr * t_train``, what Adam can move them in one cycle. Keeps the
            hyperparameters from outrunning the weights (None: no limit).
        anneal: share of the tuning phase at the end over which the hyper learning rate decays
            linearly to zero, so the final values settle instead of jittering (0: constant).
        tune_sigma: learn the perturbation scales (else they stay at the specs' ``sigma``).
        per_example: one perturbation per example instead of one per minibatch (the papers'
            variance reduction). Costs a second matmul per layer (the gated term cannot be folded
            into the weights); weight decay is then applied at the mean perturbation.
        checkpoint_every: steps between checkpoints (0: only at the end).
        seed: seeds torch's global RNG before anything random: the model when :class:`StnTuner`
            is given a factory, the response weights, perturbations and batch order.
        grad_clip: max global grad norm of the weights (None: no clipping).
    """

    lr: float = 1e-3
    hyper_lr: float = 0.03
    tau: float = 1e-3
    hyper_betas: tuple[float, float] = (0.0, 0.999)
    t_train: int = 5
    t_val: int = 1
    warmup_steps: int | None = None
    warmup_frac: float = 0.25
    delta: bool = True
    linearize: bool = False
    trust: float | None = 0.5
    anneal: float = 0.3
    tune_sigma: bool = True
    per_example: bool = False
    checkpoint_every: int = 200
    seed: int = 0
    grad_clip: float | None = None

    def __post_init__(self) -> None:
        for key in ("lr", "hyper_lr"):
            v = getattr(self, key)
            if isinstance(v, bool) or not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0):
                raise ValueError(f"{key} must be a finite number > 0, got {v!r}")
        if not (math.isfinite(self.tau) and self.tau >= 0):
            raise ValueError(f"tau must be >= 0, got {self.tau!r}")
        if self.t_train < 1 or self.t_val < 1:
            raise ValueError(f"t_train and t_val must be >= 1, got {self.t_train}, {self.t_val}")
        if (self.warmup_steps is not None and self.warmup_steps < 0) or self.checkpoint_every < 0:
            raise ValueError("warmup_steps and checkpoint_every must be >= 0")
        if not 0.0 <= self.warmup_frac < 1.0:
            raise ValueError(f"warmup_frac must be in [0, 1), got {self.warmup_frac!r}")
        if not 0.0 <= self.anneal <= 1.0:
            raise ValueError(f"anneal must be in [0, 1], got {self.anneal!r}")
        if self.trust is not None and not (math.isfinite(self.trust) and self.trust > 0):
            raise ValueError(f"trust must be a finite number > 0 or None, got {self.trust!r}")
        if self.linearize and not self.delta:
            raise ValueError("linearize needs delta=True (the linearised Delta-STN)")
        if self.linearize and self.per_example:
            raise ValueError("per_example and linearize cannot be combined")

    def warmup_for(self, steps: int) -> int:
        """Warm-up steps for a training budget of ``steps``."""
        return self.warmup_steps if self.warmup_steps is not None else int(self.warmup_frac * steps)


@dataclass
class StnResult:
    """Outcome of :meth:`StnTuner.fit`."""

    values: dict[str, float]
    sigma: dict[str, float]
    trajectory: dict[str, list[Any]]
    final_val_loss: float
    train_steps: int
    val_steps: int
    wall_s: float
    checkpoint: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


class TensorBatches:
    """Minibatches of in-memory tensors, reshuffled each pass with torch's global RNG.

    Example:
        >>> import torch
        >>> len(TensorBatches(torch.zeros(10, 3), torch.zeros(10), batch_size=4))
        3
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool = True, drop_last: bool = False
    ) -> None:
        if x.shape[0] != y.shape[0]:
            raise ValueError(f"x and y have different lengths ({x.shape[0]} vs {y.shape[0]})")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.drop_last = shuffle, drop_last

    def __len__(self) -> int:
        n = self.x.shape[0]
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = self.x.shape[0]
        order = torch.randperm(n) if self.shuffle else torch.arange(n)
        for i in range(len(self)):
            idx = order[i * self.batch_size : (i + 1) * self.batch_size]
            yield self.x[idx], self.y[idx]


class _Stream:
    """Cycles through a re-iterable; its position can be saved and restored exactly."""

    def __init__(self, data: Iterable[Any], name: str) -> None:
        if (
            isinstance(data, (tuple, list))
            and len(data) == 2
            and all(isinstance(t, torch.Tensor) for t in data)
        ):
            raise TypeError(
                f"{name} data: pass TensorBatches(x, y, batch_size) or a DataLoader, not an (x, y) tuple"
            )
        if iter(data) is data:
            raise TypeError(
                f"{name} data must be re-iterable (a DataLoader, TensorBatches or a "
                "list of batches), not a one-shot iterator/generator"
            )
        self.data, self.name = data, name
        self.epoch, self.pos = 0, 0
        self._iter: Iterator[Any] | None = None
        self._rng: torch.Tensor | None = None
        self._gen: torch.Tensor | None = None

    def _start(self) -> None:
        self._rng = torch.get_rng_state()
        gen = getattr(self.data, "generator", None)
        self._gen = gen.get_state() if isinstance(gen, torch.Generator) else None
        self._iter = iter(self.data)

    def next(self) -> Any:
        if self._iter is None:
            self._start()
        assert self._iter is not None
        try:
            batch = next(self._iter)
        except StopIteration:
            if self.pos == 0:
                raise ValueError(f"{self.name} data yields no batch") from None
            self.epoch, self.pos = self.epoch + 1, 0
            self._start()
            batch = next(self._iter)
        self.pos += 1
        return batch

    def state(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "pos": self.pos, "rng": self._rng, "gen": self._gen}

    def restore(self, state: dict[str, Any]) -> None:
        self.epoch, self.pos = int(state["epoch"]), 0
        if state["rng"] is None:
            self._iter = None
            return
        current = torch.get_rng_state()
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        gen = getattr(self.data, "generator", None)
        if state["gen"] is not None and isinstance(gen, torch.Generator):
            gen.set_state(state["gen"])
        self._rng, self._gen = state["rng"], state["gen"]
        self._iter = iter(self.data)
        for _ in range(int(state["pos"])):
            next(self._iter)
            self.pos += 1
        torch.set_rng_state(current)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a tuner checkpoint with ``torch.load(weights_only=True)``; clear errors if unusable."""
    path = Path(path)
    if not path.exists():
        raise StnCheckpointError(f"no checkpoint at {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a damaged file
        raise StnCheckpointError(
            f"checkpoint {path} is corrupt or not an STN checkpoint ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0][:200]}); delete it to start over, or point to another one"
        ) from None
    if not isinstance(state, dict) or state.get("format") != CHECKPOINT_FORMAT:
        raise StnCheckpointError(f"{path} is not an STN checkpoint of format {CHECKPOINT_FORMAT}")
    return state


class StnTuner:
    """Tune regularisation hyperparameters of ``model`` within one training run.

    Args:
        model: a plain ``nn.Module``, or a function of no arguments that builds one (then it is
            built after seeding with ``config.seed``, so the initial weights are reproducible too).
            Its ``nn.Linear``/``nn.Conv2d``/``nn.Embedding`` layers (exact types, not subclasses)
            are copied into hyperparameter-conditioned layers, its ``nn.Dropout`` modules become
            tunable; the original model is not modified.
        hypers: the hyperparameters to tune (names in the module docstring).
        loss: ``"cross_entropy"`` (outputs ``(..., C)``, integer targets), ``"mse"``, or a function
            ``(output, target) -> scalar`` (then label smoothing is unavailable).
        config: loop settings (:class:`StnConfig`).
        skip: module paths (and their children) to keep plain, e.g. ``("head",)`` for a readout
            that should not respond to the hyperparameters.
        classes: parameter name -> ``"hidden"``, ``"output"`` or ``"vector"`` (or the
            :class:`~hptransfer.scaling.torch_adapter.ParamTable` of a width-parametrized model),
            for ``weight_decay.<class>``. Default: Linear/Conv2d weights hidden, the rest vector.
        augment: ``fn(x, strength) -> x``, the data augmentation whose strength the
            ``augment`` hyperparameter tunes; applied to every training batch at the sampled
            strength (a float, or a tensor of one strength per example with ``per_example``),
            before input noise. It must draw its randomness from torch's global generator (so
            checkpoints resume it exactly), e.g. ``GlyphImages.augment_with``.
    """

    def __init__(
        self,
        model: nn.Module | Callable[[], nn.Module],
        hypers: Sequence[HyperSpec],
        *,
        loss: LossName | LossFn = "cross_entropy",
        config: StnConfig | None = None,
        skip: Sequence[str] = (),
        classes: Mapping[str, Any] | None = None,
        augment: Callable[[torch.Tensor, float | torch.Tensor], torch.Tensor] | None = None,
    ) -> None:
        self.config = config or StnConfig()
        if augment is not None and not callable(augment):
            raise TypeError(f"augment must be a function fn(x, strength) -> x, got {augment!r}")
        self._augment_fn = augment
        torch.manual_seed(self.config.seed)
        if not isinstance(model, nn.Module):
            if not callable(model):
                raise TypeError(f"model must be an nn.Module or a function that builds one, got {model!r}")
            model = model()
            if not isinstance(model, nn.Module):
                raise TypeError(f"the model factory returned {type(model).__name__}, not an nn.Module")
            torch.manual_seed(self.config.seed + 1)  # the STN's own draws do not depend on the model
        self.plain = model
        hypers = [replace(s, integer=True) if base_name(s.name) == "input_mask" else s for s in hypers]
        self.hyper = HyperParams(hypers)
        if isinstance(loss, str) and loss not in ("cross_entropy", "mse"):
            raise ValueError(f"loss must be 'cross_entropy', 'mse' or a callable, got {loss!r}")
        self.loss = loss
        self._classes = dict(classes or {})
        self.model: StnModel = to_stn(model, len(self.hyper), delta=self.config.delta, skip=tuple(skip))
        device = next(self.model.parameters()).device
        self.device = device
        self.hyper.to(device)
        self._bind()
        self._layers = self.model.stn_layers()
        self.warnings: list[str] = []
        self._budget = 0
        self.opt = torch.optim.Adam(self.model.parameters(), lr=self.config.lr, **adam_kwargs(device))
        hparams = [self.hyper.u] + ([self.hyper.rho] if self.config.tune_sigma else [])
        self.hopt = torch.optim.Adam(
            hparams, lr=self.config.hyper_lr, betas=self.config.hyper_betas, **adam_kwargs(device)
        )
        self.step = self.n_train = self.n_val = 0
        self.trajectory: dict[str, list[Any]] = {
            "step": [],
            "phase": [],
            "loss": [],
            "eval_step": [],
            "eval_loss": [],
            "hypergrad": [],
        }
        for name in self.hyper.names:
            self.trajectory[f"value/{name}"] = []
            self.trajectory[f"sigma/{name}"] = []
        self.last_checkpoint: tuple[str, int] | None = None

    # -- binding hyperparameter names to what they act on --------------------------------------
    def available(self) -> list[str]:
        """Hyperparameter names this model and loss support."""
        names: list[str] = []
        drops = [p.removeprefix("net.") for p in self.model.dropouts()]
        if drops:
            names += ["dropout"] + [f"dropout.{p}" for p in drops]
        layer_paths = [p.removeprefix("net.") if p != "net" else "" for p in self.model.stn_layers()]
        names += ["l2"] + [f"l2.{p}" for p in layer_paths if p]
        names += ["weight_decay"] + [f"weight_decay.{c}" for c in PARAM_CLASSES]
        names += [f"weight_decay.{p}" for p in layer_paths if p]
        names += ["input_noise", "input_mask"]
        if self._augment_fn is not None:
            names.append("augment")
        if self.loss == "cross_entropy":
            names.append("label_smoothing")
        return names

    def param_classes(self) -> dict[str, str]:
        """Class of each parameter of the plain model (``hidden``, ``output`` or ``vector``):
        the ``classes`` given to the tuner, else Linear/Conv2d weights are ``hidden`` and
        everything else (embeddings, biases, norm gains) is ``vector``."""
        out: dict[str, str] = {}
        layers = self.model.stn_layers()
        for name, _ in self.plain.named_parameters():
            owner, _, leaf = name.rpartition(".")
            layer = layers.get(f"net.{owner}" if owner else "net")
            matrix = isinstance(layer, (StnLinear, StnConv2d)) and leaf == "weight"
            out[name] = "hidden" if matrix else "vector"
        for name, cls in self._classes.items():
            if name not in out:
                raise ValueError(f"classes: {name!r} is not a parameter of the model")
            cls = str(getattr(cls, "cls", cls)).lower().split(".")[-1]
            if cls not in PARAM_CLASSES:
                raise ValueError(f"classes: {name!r} -> {cls!r}; use one of {', '.join(PARAM_CLASSES)}")
            out[name] = cls
        return out

    def _bind(self) -> None:
        avail = self.available()
        self._drop: dict[str, int] = {}  # dropout module path -> hyper index
        self._wd: dict[str, int] = {}  # stn layer path -> index of its L2 coefficient
        self._awd: dict[str, int] = {}  # plain parameter name -> index of its AdamW weight decay
        self._idx: dict[str, int] = {}  # input_noise / input_mask / label_smoothing -> index
        drops, layers = self.model.dropouts(), self.model.stn_layers()
        classes = self.param_classes()
        matrices = [p for p, m in layers.items() if isinstance(m, (StnLinear, StnConv2d))]
        general: dict[str, list[str]] = {"dropout": list(drops), "l2": matrices}
        specific: dict[str, dict[str, int]] = {"dropout": {}, "l2": {}}
        awd_general: dict[str, int] = {}
        awd_specific: dict[str, int] = {}
        for i, spec in enumerate(self.hyper.specs):
            name, base = spec.name, base_name(spec.name)
            if base in ("lr", "learning_rate"):
                raise ValueError(
                    f"{name}: the STN cannot tune the learning rate: the best response w*(lambda) "
                    "depends on the training objective, which the lr is not part of, so the "
                    "validation gradient carries no signal about it. Tune lr with `hptransfer tune`."
                )
            if name == "augment" and name not in avail:
                raise ValueError(
                    "augment: no augmentation to scale; pass StnTuner(augment=fn) with "
                    "fn(x, strength) -> x (the glyphs task's is task.data.augment_with)"
                )
            if name not in avail:
                raise ValueError(
                    f"hyperparameter {name!r} is not used by this model; available: " + ", ".join(avail)
                )
            if spec.integer and base != "input_mask":
                raise ValueError(f"{name}: only input_mask is an integer hyperparameter")
            if not spec.train_only:
                raise ValueError(
                    f"{name}: train_only=False is not supported: every built-in "
                    "hyperparameter acts on the training objective only"
                )
            if base == "weight_decay":
                suffix = name.partition(".")[2]
                if suffix in ("", "hidden", "output", "vector"):
                    wanted = {"": ("hidden", "output")}.get(suffix, (suffix,))
                    for pname, cls in classes.items():
                        if cls in wanted:
                            awd_general.setdefault(pname, i)
                else:  # one layer's weight
                    awd_specific[f"{suffix}.weight"] = i
            elif name in general:
                for p in general[name]:
                    (self._drop if base == "dropout" else self._wd).setdefault(p, i)
            elif base in specific:
                specific[base]["net." + name.split(".", 1)[1]] = i
            else:
                self._idx[name] = i
        self._drop.update(specific["dropout"])
        self._wd.update(specific["l2"])
        self._awd = {**awd_general, **awd_specific}
        empty = [s.name for s in self.hyper.specs if base_name(s.name) == "weight_decay"]
        empty = [n for n in empty if self.hyper.names.index(n) not in self._awd.values()]
        if empty:
            raise ValueError(
                f"{empty[0]}: no parameter of that class in this model (pass classes= to name them, "
                "e.g. the table of hptransfer.scaling.torch_adapter.classify)"
            )
        # where each decayed parameter lives: (STN layer, is the layer's weight) or a plain parameter
        stn_params = dict(self.model.named_parameters())
        self._awd_targets: list[tuple[int, StnLayer | None, nn.Parameter]] = []
        for pname, i in self._awd.items():
            owner, _, leaf = pname.rpartition(".")
            layer = layers.get(f"net.{owner}" if owner else "net")
            if layer is not None and leaf == "weight":
                self._awd_targets.append((i, layer, layer.weight))
            else:
                self._awd_targets.append((i, None, stn_params[f"net.{pname}"]))

    @torch.no_grad()
    def _decoupled_decay(self, vals: list[float]) -> None:
        """AdamW's decoupled decay at the sampled values, before the Adam step (as torch does).

        AdamW's decay is ``lr`` times the gradient of ``wd/2 ||W||^2``, applied outside Adam's
        preconditioning. Here ``W`` is the effective weight ``W(h) = W_e + diag(g(h)) W_h``, and the
        step goes to every parameter it depends on: ``W_e -= lr wd W(h)``, the response
        ``W_h -= lr wd diag(g) W(h)`` and the gates through ``g = V h``. The response thereby learns
        how the weights shrink with the decay (a decay applied to ``W_e`` alone would leave the
        response blind to it). Parameters outside STN layers: ``p -= lr wd p``.
        """
        lr = float(self.opt.param_groups[0]["lr"])
        for i, layer, param in self._awd_targets:
            coef = lr * vals[i]
            if not coef:
                continue
            if layer is None:
                param.mul_(1.0 - coef)
                continue
            cached = layer._last
            w = cached[2] if cached is not None and cached[0] is layer.ctx.h else layer.effective()[0]
            w = w.detach()
            g = layer.ctx.gates(layer.gate.detach())
            param.sub_(w, alpha=coef)
            if g is None or layer.ctx.h is None:
                continue
            h = layer.ctx.h.detach()
            if isinstance(layer, StnEmbedding):
                dg = (layer.hweight.detach() * w).sum(dim=0)  # per embedding dim
                layer.hweight.sub_(w * g, alpha=coef)
                layer.gate.sub_(torch.outer(dg, h), alpha=coef)
            else:
                out = w.shape[0]
                gw = g[:out].reshape((-1,) + (1,) * (w.dim() - 1))
                dg = (layer.hweight.detach() * w).reshape(out, -1).sum(dim=1)
                layer.hweight.sub_(w * gw, alpha=coef)
                layer.gate[:out].sub_(torch.outer(dg, h), alpha=coef)

    # -- one step ------------------------------------------------------------------------------
    def _net_input(self, u: torch.Tensor) -> torch.Tensor:
        h = self.hyper.net_input(u)
        if self.config.delta:
            h = h - self._centre()
        return h

    def _centre(self) -> torch.Tensor:
        """``stopgrad(n(u))``, computed once per hyper step: cached on the version counter of ``u``,
        which every in-place change (optimiser step, projection, checkpoint load) bumps."""
        u = self.hyper.u
        key = (id(u), u._version)
        if self._centre_cache is None or self._centre_cache[0] != key:
            with torch.no_grad():
                self._centre_cache = (key, self.hyper.net_input(u))
        return self._centre_cache[1]

    _centre_cache: tuple[tuple[int, int], torch.Tensor] | None = None

    def _loss(
        self, out: torch.Tensor, y: torch.Tensor, smoothing: float | torch.Tensor = 0.0
    ) -> torch.Tensor:
        if self.loss == "cross_entropy" and isinstance(smoothing, torch.Tensor):  # one per example
            logp = F.log_softmax(out.float(), dim=-1)
            nll = -logp.gather(-1, y.unsqueeze(-1)).squeeze(-1)
            eps = smoothing.reshape((-1,) + (1,) * (nll.dim() - 1))
            return ((1.0 - eps) * nll - eps * logp.mean(dim=-1)).mean()
        if self.loss == "cross_entropy":
            return F.cross_entropy(
                out.reshape(-1, out.shape[-1]).float(), y.reshape(-1), label_smoothing=float(smoothing)
            )
        if self.loss == "mse":
            return F.mse_loss(out.float(), y.float())
        assert callable(self.loss)
        return self.loss(out, y)

    def _augment(
        self, x: torch.Tensor, vals: list[float], per_example: torch.Tensor | None = None
    ) -> torch.Tensor:
        i = self._idx.get("augment")
        if i is not None:
            assert self._augment_fn is not None
            x = self._augment_fn(x, vals[i] if per_example is None else per_example[:, i])
        i = self._idx.get("input_noise")
        if i is not None:
            if not x.is_floating_point():
                raise ValueError(f"input_noise needs float inputs; this data yields {x.dtype} (token ids?)")
            if per_example is not None:
                std = per_example[:, i].reshape((-1,) + (1,) * (x.dim() - 1))
                x = x + std * torch.randn_like(x)
            else:
                x = x + vals[i] * torch.randn_like(x)
        i = self._idx.get("input_mask")
        if i is not None:
            k = math.floor(vals[i]) + int(float(torch.rand(())) < vals[i] - math.floor(vals[i]))
            if k > 0:
                flat = x.reshape(x.shape[0], -1)
                keep = torch.rand(flat.shape, device=x.device).argsort(dim=1).argsort(dim=1) >= k
                x = (flat * keep).reshape(x.shape)
        return x

    def _forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Output, or (primal, tangent) of the output linearised in the response (Delta-STN)."""
        if not (self.config.delta and self.config.linearize):
            return self.model(x), None
        ctx = self.model.ctx
        with fwad.dual_level():
            ctx.scale = fwad.make_dual(torch.zeros((), device=x.device), torch.ones((), device=x.device))
            try:
                out = self.model(x)
            finally:
                ctx.scale = None
            primal, tangent = fwad.unpack_dual(out)
        if tangent is None:
            tangent = torch.zeros_like(primal)
        return primal, tangent

    def _check(self, loss: torch.Tensor, phase: str) -> float:
        """``float(loss)``, or :class:`StnDivergedError` naming the step and the last checkpoint."""
        value = float(loss.detach())
        if not math.isfinite(value):
            where = (
                (
                    f"the last good checkpoint is {self.last_checkpoint[0]} (step "
                    f"{self.last_checkpoint[1]}); lower the learning rates or narrow the bounds "
                    "and resume from it"
                )
                if self.last_checkpoint
                else "no checkpoint was written yet; lower the learning rates or narrow the bounds"
            )
            raise StnDivergedError(
                f"non-finite {phase} loss at step {self.step} with hyperparameters "
                + ", ".join(f"{k}={v:.4g}" for k, v in self.hyper.values_dict().items())
                + f"; stopped: {where}"
            )
        return value

    def _l2(self, vals: list[float]) -> torch.Tensor | None:
        terms = [self._layers[p].l2(vals[i]) for p, i in self._wd.items()]
        return torch.stack(terms).sum() if terms else None

    def _train_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if not self.model.training:
            self.model.train()
        ctx = self.model.ctx
        per = self.config.per_example
        with torch.no_grad():
            if per:  # one draw per example; batch-level regularisers take the batch mean
                u = self.hyper.sample(n=x.shape[0])
                v_all = self.hyper.values(u)
                vals: list[float] = v_all.mean(dim=0).tolist()
            else:
                u = self.hyper.sample()
                vals = self.hyper.values(u).tolist()
            ctx.h = self._net_input(u)
        if per:
            ctx.rates = {p: v_all[:, i] for p, i in self._drop.items()}
            x = self._augment(x, vals, v_all)
            i_ls = self._idx.get("label_smoothing")
            ls: float | torch.Tensor = 0.0 if i_ls is None else v_all[:, i_ls]
        else:
            ctx.rates = {p: vals[i] for p, i in self._drop.items()}
            x = self._augment(x, vals)
            ls = vals[self._idx["label_smoothing"]] if "label_smoothing" in self._idx else 0.0
        self.opt.zero_grad(set_to_none=True)
        if tangent_free := not (self.config.delta and self.config.linearize):
            # the weight-decay gradient is added inside the gated-weight backward (cheaper than
            # an L2 graph): same gradient as + wd/2 ||W(h)||^2 in the loss
            for p, i in self._wd.items():
                # plain attribute (object.__setattr__: nn.Module.__setattr__ costs ~15 us a call)
                object.__setattr__(self._layers[p], "l2_coef", vals[i])
        try:
            primal, tangent = self._forward(x)
        finally:
            for p in self._wd:
                object.__setattr__(self._layers[p], "l2_coef", 0.0)
        if per:
            # L2 on the weights at the batch's mean perturbation (and AdamW decay below)
            h_all = ctx.h
            ctx.h = h_all.mean(dim=0) if h_all is not None else None
            loss = self._loss(primal, y, ls)
            value = self._check(loss, "training")
            reg = self._l2(vals) if self._wd else None
            (loss if reg is None else loss + reg).backward()
        elif tangent_free:
            loss = self._loss(primal, y, ls)
            value = self._check(loss, "training")
            loss.backward()
        else:
            # Delta-STN: base weights on the unperturbed loss, response on the perturbed one
            base_loss = self._loss(primal, y, ls)
            assert tangent is not None
            resp_loss = self._loss(primal.detach() + tangent, y, ls)
            h = ctx.h
            ctx.h = None
            base_reg = self._l2(vals)
            ctx.h = h
            resp_reg = self._l2(vals)
            self._check(base_loss, "training")
            value = self._check(resp_loss, "training")
            base_total = base_loss if base_reg is None else base_loss + base_reg
            resp_total = resp_loss if resp_reg is None else resp_loss + resp_reg
            base_p, resp_p = self.model.base_parameters(), self.model.response_parameters()
            gb = torch.autograd.grad(base_total, base_p, retain_graph=True, allow_unused=True)
            gr = torch.autograd.grad(resp_total, resp_p, allow_unused=True)
            for param, grad in zip(base_p + resp_p, gb + gr):
                param.grad = grad
        if self.config.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if self._awd_targets:
            self._decoupled_decay(vals)
        self.opt.step()
        ctx.h, ctx.rates = None, {}
        for layer in self._layers.values():
            object.__setattr__(layer, "_last", None)
        return value

    def _val_step(self, x: torch.Tensor, y: torch.Tensor) -> float:
        if self.model.training:
            self.model.eval()
        ctx = self.model.ctx
        u = self.hyper.sample(n=x.shape[0] if self.config.per_example else None)
        ctx.h = self._net_input(u)
        primal, tangent = self._forward(x)
        out = primal if tangent is None else primal + tangent
        loss = self._loss(out, y)
        value = self._check(loss, "validation")
        obj = loss - self.config.tau * self.hyper.entropy()
        params = [self.hyper.u] + ([self.hyper.rho] if self.config.tune_sigma else [])
        grads = torch.autograd.grad(obj, params, allow_unused=True)
        ctx.h = None
        if grads[0] is not None:
            self.trajectory["hypergrad"].append(grads[0].tolist())
        self.hopt.zero_grad(set_to_none=True)
        for p, g in zip(params, grads):
            p.grad = g
        scale = self._hyper_lr_scale()
        for group in self.hopt.param_groups:
            group["lr"] = self.config.hyper_lr * scale
        if scale > 0.0:
            before = self.hyper.u.detach().clone()
            self.hopt.step()
            if self.config.trust is not None:
                self._trust_region(before)
            self.hyper.project_()
        return value

    def _hyper_lr_scale(self) -> float:
        """Linear decay to 0 over the last ``anneal`` share of the tuning phase."""
        c = self.config
        if not c.anneal or not self._budget:
            return 1.0
        warm = c.warmup_for(self._budget)
        progress = (self.n_train - warm) / max(1, self._budget - warm)
        return min(1.0, max(0.0, (1.0 - progress) / c.anneal))

    def _phase(self) -> str:
        c = self.config
        warm = c.warmup_for(self._budget)
        if self.n_train < warm:
            return "train"
        target = ((self.n_train - warm) // c.t_train) * c.t_val
        return "val" if self.n_val < target else "train"

    @torch.no_grad()
    def response_rms(self) -> torch.Tensor:
        """RMS over every conditioned weight of ``dW/du_j``, per hyperparameter ``j``: how far one
        unit of ``u`` moves the weights according to the learned response."""
        n = len(self.hyper)
        total = torch.zeros(n, device=self.device)
        count = 0
        for layer in self._layers.values():
            gate = layer.gate.detach()  # (gates, n)
            if isinstance(layer, StnEmbedding):
                col = layer.hweight.detach().pow(2).sum(dim=0)  # per embedding dim
                total += (gate.pow(2) * col[:, None]).sum(dim=0)
            else:
                out = layer.weight.shape[0]
                row = layer.hweight.detach().reshape(out, -1).pow(2).sum(dim=1)
                total += (gate[:out].pow(2) * row[:, None]).sum(dim=0)
                if layer.hbias is not None:
                    total += (gate[out:].pow(2) * layer.hbias.detach().pow(2)[:, None]).sum(dim=0)
            count += layer.weight.numel() + (0 if layer.bias is None else layer.bias.numel())
        return (total / max(count, 1)).sqrt() / self.hyper.scale

    @torch.no_grad()
    def _trust_region(self, before: torch.Tensor) -> None:
        """Shrink the last hyper step so the predicted weight change stays trackable."""
        lr = float(self.opt.param_groups[0]["lr"])
        cap = self.config.trust * lr * self.config.t_train / self.response_rms().clamp_min(1e-12)  # type: ignore[operator]
        step = self.hyper.u - before
        self.hyper.u.copy_(before + torch.maximum(torch.minimum(step, cap), -cap))

    # -- evaluation and export -----------------------------------------------------------------
    @torch.no_grad()
    def evaluate(self, data: Iterable[Any]) -> float:
        """Mean unregularised loss over ``data`` at the current hyperparameters (eval mode)."""
        self.model.eval()
        self.model.ctx.h = self._net_input(self.hyper.u)
        total, count = 0.0, 0
        try:
            for x, y in data:
                x, y = x.to(self.device), y.to(self.device)
                n = y.numel() if self.loss == "cross_entropy" else y.shape[0]
                total += float(self._loss(self.model(x), y)) * n
                count += n
        finally:
            self.model.ctx.h = None
        if count == 0:
            raise ValueError("evaluation data yields no batch")
        return total / count

    def export_model(self) -> nn.Module:
        """A copy of the plain model carrying the effective weights at the current hyperparameters.

        Its dropout modules keep their original rates; set them to :meth:`values` if you train on.
        """
        with torch.no_grad():
            h = self._net_input(self.hyper.u)
        return self.model.export_plain(self.plain, h)

    def values(self) -> dict[str, float]:
        """Current (unperturbed) hyperparameter values."""
        return self.hyper.values_dict()

    # -- checkpoints ---------------------------------------------------------------------------
    def state_dict(self, streams: dict[str, _Stream]) -> dict[str, Any]:
        return {
            "format": CHECKPOINT_FORMAT,
            "specs": [s.to_dict() for s in self.hyper.specs],
            "config": asdict(self.config),
            "step": self.step,
            "n_train": self.n_train,
            "n_val": self.n_val,
            "budget": self._budget,
            "model": self.model.state_dict(),
            "hyper": self.hyper.state_dict(),
            "opt": self.opt.state_dict(),
            "hopt": self.hopt.state_dict(),
            "rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "streams": {k: s.state() for k, s in streams.items()},
            "trajectory": self.trajectory,
        }

    def save(self, path: str | Path, streams: dict[str, _Stream]) -> None:
        """Write a checkpoint atomically (a kill during the write leaves the previous one)."""
        bad = [n for n, p in self.model.named_parameters() if not torch.isfinite(p).all()]
        if bad:
            raise StnDivergedError(
                f"non-finite weights in {bad[0]} at step {self.step}; the last "
                f"good checkpoint is kept: {self.last_checkpoint}"
            )
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        buffer = io.BytesIO()  # serialised in memory: a full disk then raises OSError(ENOSPC), with
        torch.save(self.state_dict(streams), buffer)  # errno, not torch's bare RuntimeError
        try:
            with open(tmp, "wb") as f:
                f.write(buffer.getbuffer())
                f.flush()
                os.fsync(f.fileno())  # on disk before it replaces the last good checkpoint
            os.replace(tmp, path)
        except BaseException:  # a full disk or Ctrl-C mid-write: no half-written .tmp left behind
            tmp.unlink(missing_ok=True)
            raise
        self.last_checkpoint = (str(path), self.step)

    def changed_settings(self, state: Mapping[str, Any]) -> list[str]:
        """What differs between this run and a checkpoint's: ``"hyper_lr 0.03 -> 0.1"``, ...

        Everything that shapes the trajectory counts: the hyperparameter specs, every
        :class:`StnConfig` field except ``checkpoint_every``, and the training budget.
        """

        def norm(v: Any) -> Any:
            return [norm(x) for x in v] if isinstance(v, (list, tuple)) else v

        out: list[str] = []
        names = [s["name"] for s in state.get("specs", [])]
        if names != list(self.hyper.names):
            return [f"hyperparameters {names} -> {list(self.hyper.names)}"]
        for old, new in zip(state["specs"], (s.to_dict() for s in self.hyper.specs)):
            for key in new:
                if norm(old.get(key)) != norm(new[key]):
                    out.append(f"{new['name']} {key} {old.get(key)} -> {new[key]}")
        mine = asdict(self.config)
        for key, value in mine.items():
            if key != "checkpoint_every" and norm(state["config"].get(key)) != norm(value):
                out.append(f"{key} {state['config'].get(key)} -> {value}")
        budget = state.get("budget")
        if budget is not None and self._budget and int(budget) != self._budget:
            out.append(f"training steps {budget} -> {self._budget}")
        return out

    def load_state(self, state: dict[str, Any], streams: dict[str, _Stream], source: str = "") -> None:
        changed = self.changed_settings(state)
        if changed:
            raise StnCheckpointError(
                f"checkpoint {source} was written with other settings ({'; '.join(changed)}); "
                "resume with the settings it was written with, or start a new run elsewhere"
            )
        try:
            self.model.load_state_dict(state["model"])
            self.hyper.load_state_dict(state["hyper"])
            self.opt.load_state_dict(state["opt"])
            self.hopt.load_state_dict(state["hopt"])
        except (RuntimeError, KeyError, ValueError) as exc:
            raise StnCheckpointError(
                f"checkpoint {source} does not match this model: {str(exc).splitlines()[0][:200]}"
            ) from None
        self.step, self.n_train, self.n_val = int(state["step"]), int(state["n_train"]), int(state["n_val"])
        self.trajectory = {k: list(v) for k, v in state["trajectory"].items()}
        for key, stream in streams.items():
            stream.restore(state["streams"][key])
        torch.set_rng_state(state["rng"])
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])

    # -- the loop ------------------------------------------------------------------------------
    def fit(
        self,
        train: Iterable[Any],
        val: Iterable[Any],
        *,
        steps: int | None = None,
        epochs: int | None = None,
        checkpoint: str | Path | None = None,
        resume: bool = False,
        eval_data: Iterable[Any] | None = None,
        eval_every: int = 0,
        callback: Callable[[StnTuner, dict[str, Any]], None] | None = None,
    ) -> StnResult:
        """Train and tune; returns the final hyperparameters and their trajectory.

        Args:
            train, val: re-iterables of ``(x, y)`` minibatches (``DataLoader``, :class:`TensorBatches`).
            steps / epochs: training budget in training steps, or passes over ``train``
                (validation steps come on top).
            checkpoint: file to checkpoint to every ``config.checkpoint_every`` steps and at the end.
            resume: continue from ``checkpoint`` (it must exist and be readable).
            eval_data: data for the recorded evaluation loss (default ``val``); evaluated every
                ``eval_every`` training steps (0: at the end only).
            callback: called after every step with the tuner and that step's record.
        """
        if (steps is None) == (epochs is None):
            raise ValueError("give exactly one of steps or epochs")
        if epochs is not None:
            try:
                steps = epochs * len(train)  # type: ignore[arg-type]
            except TypeError:
                raise ValueError("train data has no len(); give steps instead of epochs") from None
        assert steps is not None
        if steps < 1:
            raise ValueError(f"the training budget must be >= 1 step, got {steps}")
        streams = {"train": _Stream(train, "train"), "val": _Stream(val, "validation")}
        eval_data = val if eval_data is None else eval_data
        self._budget = steps
        if resume:
            if checkpoint is None:
                raise ValueError("resume needs a checkpoint path")
            self.load_state(load_checkpoint(checkpoint), streams, str(checkpoint))
            self.last_checkpoint = (str(checkpoint), self.step)
        start = time.perf_counter()
        every = self.config.checkpoint_every
        stop: list[int] = []
        previous = None
        if threading.current_thread() is threading.main_thread():
            # the first Ctrl-C stops at the next step boundary (after a checkpoint); a second one
            # interrupts at once
            def on_sigint(signum: int, frame: Any) -> None:
                if stop:
                    raise KeyboardInterrupt
                stop.append(signum)

            previous = signal.signal(signal.SIGINT, on_sigint)
        try:
            while self.n_train < steps:
                phase = self._phase()
                x, y = streams[phase].next()
                x, y = x.to(self.device), y.to(self.device)
                loss = self._train_step(x, y) if phase == "train" else self._val_step(x, y)
                if phase == "train":
                    self.n_train += 1
                else:
                    self.n_val += 1
                self.step += 1
                record = self._record(phase, loss)
                if phase == "train" and eval_every and self.n_train % eval_every == 0:
                    self._record_eval(eval_data)
                if checkpoint is not None and every and self.step % every == 0:
                    self.save(checkpoint, streams)
                if callback is not None:
                    callback(self, record)
                if stop:
                    if checkpoint is not None:
                        self.save(checkpoint, streams)
                    raise StnInterrupted(self.step, None if checkpoint is None else str(checkpoint))
        finally:
            if previous is not None:
                signal.signal(signal.SIGINT, previous)
        if not self.trajectory["eval_step"] or self.trajectory["eval_step"][-1] != self.step:
            self._record_eval(eval_data)
        if checkpoint is not None:
            self.save(checkpoint, streams)
        self.warnings = self._runaway_warnings()
        for message in self.warnings:
            warnings.warn(message, StnRunawayWarning, stacklevel=2)
        return StnResult(
            values=self.values(),
            sigma=self.hyper.sigma_dict(),
            trajectory=self.trajectory,
            final_val_loss=self.trajectory["eval_loss"][-1],
            train_steps=self.n_train,
            val_steps=self.n_val,
            wall_s=time.perf_counter() - start,
            checkpoint=None if checkpoint is None else str(checkpoint),
            extra={"warnings": list(self.warnings)},
        )

    def _runaway_warnings(self) -> list[str]:
        """Signs that a hyperparameter ran away: pinned at a bound it did not start at, or moved
        far (more than 0.5 in unconstrained units) while its hypergradient had no consistent sign
        (|t| < 1 over the tuning phase): a random walk that Adam's normalisation scaled up."""
        out: list[str] = []
        values = self.values()
        grads = torch.tensor(
            self.trajectory.get("hypergrad") or [[0.0] * len(self.hyper)], dtype=torch.float64
        )
        n = grads.shape[0]
        t_stat = grads.mean(0) / (grads.std(0) / math.sqrt(n)).clamp_min(1e-300) if n > 2 else None
        for j, spec in enumerate(self.hyper.specs):
            v = values[spec.name]
            lo, hi = spec.low, spec.high
            if spec.transform == "log":
                span = math.log(hi) - math.log(lo) if math.isfinite(hi) else math.inf
                near_lo = math.log(v) - math.log(lo) < 0.01 * span
                near_hi = math.isfinite(hi) and math.log(hi) - math.log(v) < 0.01 * span
            else:
                near_lo, near_hi = v - lo < 0.01 * (hi - lo), hi - v < 0.01 * (hi - lo)
            started = spec.init
            if (near_lo and not abs(started - lo) <= 0.01 * abs(hi - lo)) or (
                near_hi and not abs(hi - started) <= 0.01 * abs(hi - lo)
            ):
                bound = "lower" if near_lo else "upper"
                out.append(
                    f"{spec.name} ran to its {bound} bound ({v:.4g}, started at {started:.4g}): the "
                    "optimum may lie beyond it (widen the bounds) or the tuning ran away (lower "
                    "hyper_lr, longer warm-up, or try linearize=True)"
                )
                continue
            path = [spec.to_unconstrained(x) for x in self.trajectory[f"value/{spec.name}"]]
            u0 = spec.to_unconstrained(started)
            excursion = max((abs(u - u0) for u in path if math.isfinite(u)), default=0.0)
            if t_stat is not None and excursion > 0.5 and abs(float(t_stat[j])) < 1.0:
                out.append(
                    f"{spec.name} moved {excursion:.2f} (unconstrained units) from {started:.4g} to "
                    f"{v:.4g} without a consistent hypergradient (t = {float(t_stat[j]):+.1f} over "
                    f"{n} hyper steps): likely a random walk, not a trend; the value is unreliable "
                    "(more steps, a longer warm-up or a lower hyper_lr)"
                )
        return out

    def _record(self, phase: str, loss: float) -> dict[str, Any]:
        t = self.trajectory
        t["step"].append(self.step)
        t["phase"].append(phase)
        t["loss"].append(loss)
        values, sigma = self.hyper.values_dict(), self.hyper.sigma_dict()
        for name in self.hyper.names:
            t[f"value/{name}"].append(values[name])
            t[f"sigma/{name}"].append(sigma[name])
        return {
            "step": self.step,
            "phase": phase,
            "loss": loss,
            "values": values,
            "sigma": sigma,
            "n_train": self.n_train,
            "n_val": self.n_val,
        }

    def _record_eval(self, data: Iterable[Any]) -> None:
        loss = self.evaluate(data)
        self.trajectory["eval_step"].append(self.step)
        self.trajectory["eval_loss"].append(loss)
