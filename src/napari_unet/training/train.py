"""Fine-tuning engine: a direct training loop exposed as a generator.

``for event in fine_tune(model, images, labels, config): ...`` trains ``model`` in place
on the annotated slices with the paper's weighted cross-entropy (Eq. 1 with the border
weights of Eq. 2) and elastic augmentation. Stopping the iteration cancels; the model is
then at its last completed step. The GUI, the CLI and the benchmarks drive this one loop.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__, devices
from ..model import UNet, crop_to
from ..model_files import load_checkpoint, save_checkpoint
from .anchoring import Anchors, anchor_crop, anchor_loss, prepare_anchors
from .augment import augment_sample
from .samples import (  # noqa: F401  (annotated_slices and target_expansion: public here too)
    Sample,
    annotated_slices,
    prepare_samples,
    random_crop,
    target_expansion,
)
from .train_config import TrainConfig

#: Architecture used when training from scratch (CLI without ``--model``).
DEFAULT_ARCHITECTURE: dict[str, Any] = {"depth": 4, "base_channels": 16, "padding": "valid"}


@dataclass
class TrainEvent:
    """Progress of one completed step (a :class:`napari_unet.jobs.Event`)."""

    step: int
    steps: int
    loss: float  # what is optimised: the corrections' loss plus the anchoring term
    elapsed: float
    val_metric: float | None = None
    fit_loss: float | None = None  # the corrections' loss alone (None: the same as ``loss``)

    @property
    def corrections_loss(self) -> float:
        """The corrections' loss alone (``fit_loss``, else ``loss``)."""
        return self.loss if self.fit_loss is None else self.fit_loss

    @property
    def message(self) -> str:
        """``"step 3/60: loss 0.4120 (2 s)"``."""
        return f"step {self.step}/{self.steps}: loss {self.loss:.4f} ({self.elapsed:.0f} s)"

    @property
    def fraction(self) -> float | None:
        """Steps done of all (None without a step count)."""
        return min(1.0, max(0.0, self.step / self.steps)) if self.steps > 0 else None


def make_optimizer(model: UNet, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD with momentum (the paper), over the layers ``config.freeze`` leaves."""
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(params, lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    raise ValueError(f"optimizer must be 'adamw', 'adam' or 'sgd', got {config.optimizer!r}")


def weighted_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """Eq. 1: pixel-wise softmax cross-entropy weighted by ``weight``, averaged over annotated pixels.

    ``logits (N, K, h, w)``; ``target`` and ``weight`` ``(N, H, W)`` are centre-cropped to
    ``(h, w)`` (the valid output of unpadded networks).
    """
    target = crop_to(target, logits.shape[-2:])
    weight = crop_to(weight, logits.shape[-2:])
    ce = F.cross_entropy(logits.float(), target, reduction="none")
    return (ce * weight).sum() / (weight > 0).sum().clamp_min(1)


def fine_tune(
    model: UNet, images: Any, labels: Any, config: TrainConfig | None = None, *,
    slices: Sequence[int] | None = None, channel_axis: int | None = None,
    resume: str | None = None, validate: Callable[[UNet], float] | None = None,
    anchors: Sequence[Any] | None = None, exclude: Mapping[int, tuple[slice, slice]] | None = None,
) -> Generator[TrainEvent, None, UNet]:
    """Train ``model`` in place on the annotated slices, yielding one event per step.

    Parameters
    ----------
    model : UNet
        Trained in place; pass a copy to keep the original.
    images : array-like
        ``(Y, X)``, ``(Z, Y, X)`` or with channels (see :func:`napari_unet.inference.inputs.as_image_view`).
    labels : array-like
        Instance labels or a binary mask, shaped like the image's spatial axes. Slices
        with any nonzero label are used unless ``slices`` is given.
    config : TrainConfig, optional
        Settings (defaults: :class:`TrainConfig`).
    slices : sequence of int, optional
        Annotated slices to train on.
    channel_axis : int, optional
        Channel axis of ``images``.
    resume : str, optional
        A checkpoint to continue from (model weights, optimiser state and step).
    validate : callable, optional
        ``validate(model) -> float``, called every ``config.val_every`` steps.
    anchors : sequence of array-like or Anchors, optional
        Unannotated 2D slices of the same data (or :class:`~napari_unet.training.anchoring.Anchors`
        already prepared from them): each step also keeps the model's output on
        a crop of one of them close to what the model predicted there before this
        fine-tuning (``config.anchor_weight``, :mod:`napari_unet.training.anchoring`).
    exclude : mapping, optional
        Slice index -> ``(rows, cols)`` box held back from training (weight 0).

    Yields
    ------
    TrainEvent
        After each completed step.

    Returns
    -------
    UNet
        The trained model (the same object), with ``model.record`` updated.

    Notes
    -----
    The model is in training mode between steps: do not predict with the same object
    while this generator is alive (predict with a copy, as the dock does).
    """
    cfg = _checked_config(config)
    samples, zs = prepare_samples(model, images, labels, cfg.targets, slices, channel_axis, exclude)
    run = _start_run(model, cfg, anchors, channel_axis, resume)
    try:
        yield from _train_steps(run, samples, zs, validate)
    finally:  # also when stopped: every layer trainable again, the usual layout
        freeze_layers(model, "none")
        model.to(memory_format=torch.contiguous_format).eval()
    return model


def _checked_config(config: TrainConfig | None) -> TrainConfig:
    """``config`` (default :class:`TrainConfig`), refused unless it is one with steps >= 1."""
    cfg = TrainConfig() if config is None else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    if cfg.steps < 1:
        raise ValueError(f"steps must be at least 1, got {cfg.steps}")
    return cfg


@dataclass
class _Run:
    """What the steps of one :func:`fine_tune` run share (the model trains in place)."""

    model: UNet
    cfg: TrainConfig
    dev: torch.device
    rng: np.random.Generator  # crops, augmentation and anchor crops, in this order per step
    opt: torch.optim.Optimizer
    start: int  # the last completed step (a resumed checkpoint's)
    sched: Any
    amp: torch.dtype | None
    scaler: torch.amp.GradScaler
    in_tile: int  # input edge of a training crop
    anchored: Anchors | None

    @property
    def layout(self) -> torch.memory_format:
        return _layout(self.dev)

    def step(self, samples: list[Sample], step: int) -> tuple[float, float]:
        """One optimiser step on a batch of augmented crops.

        Returns the loss (finite, else raises) and its corrections' term alone (the anchoring
        term starts near 0, the network being its own anchor, and grows as it moves away).
        """
        cfg, dev, rng = self.cfg, self.dev, self.rng
        batch = [augmented_crop(samples[int(rng.integers(len(samples)))], self.in_tile, cfg, rng)
                 for _ in range(cfg.batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch])).to(dev, memory_format=self.layout)
        t = torch.from_numpy(np.stack([b[1] for b in batch])).to(dev)
        w = torch.from_numpy(np.stack([b[2] for b in batch])).to(dev)
        self.opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=self.amp, enabled=self.amp is not None):
            fit = loss = weighted_loss(self.model(x), t, w)
            if self.anchored is not None:
                loss = loss + cfg.anchor_weight * self._anchor_term()
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the "
                                     "learning rate")
        self.scaler.scale(loss).backward()
        self.scaler.step(self.opt)
        self.scaler.update()
        self.sched.step()
        return float(loss.detach()), float(fit.detach())

    def _anchor_term(self) -> torch.Tensor:
        """The anchoring loss on one anchor crop (one a step, whatever the batch).

        The term is a mean per pixel, and a second crop would cost as much as the
        corrections themselves.
        """
        model, dev = self.model, self.dev
        xa, qa = anchor_crop(self.anchored, self.in_tile, model.halo, self.rng, model.stride)
        return anchor_loss(model(torch.from_numpy(xa[None]).to(dev, memory_format=self.layout)),
                           torch.from_numpy(qa[None]).to(dev))


def _start_run(model: UNet, cfg: TrainConfig, anchors: Sequence[Any] | None,
               channel_axis: int | None, resume: str | None) -> _Run:
    """Prepare a run before its first step (arguments as for :func:`fine_tune`).

    Prepares the anchors, seeds, puts the model on its device in training mode and makes
    the optimiser, or restores it and the model from the checkpoint ``resume``.
    """
    dev = devices.resolve_device(cfg.device)
    anchored = _anchors(model, anchors, cfg, channel_axis, dev)
    model.record["anchor_slices"] = 0 if anchored is None else len(anchored.images)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(dev, memory_format=_layout(dev)).train()  # before the optimiser takes the weights
    freeze_layers(model, cfg.freeze)
    opt = make_optimizer(model, cfg)
    start = 0
    if resume:
        ck = load_checkpoint(resume, map_location=dev)
        model.load_state_dict(ck["model"].state_dict())
        opt.load_state_dict(ck["optimizer"])
        start = int(ck["step"])
    sched = _scheduler(opt, cfg, start)
    amp = devices.training_dtype(dev) if cfg.amp else None
    scaler = torch.amp.GradScaler(dev.type, enabled=amp == torch.float16)
    in_tile = model.valid_input_size(cfg.tile + 2 * model.halo)
    return _Run(model, cfg, dev, rng, opt, start, sched, amp, scaler, in_tile, anchored)


def _layout(dev: torch.device) -> torch.memory_format:
    """Channels last on CPUs while training: the same numbers, a step 15-20 % faster."""
    return torch.channels_last if dev.type == "cpu" else torch.contiguous_format


def freeze_layers(model: UNet, freeze: str) -> None:
    """Let only the layers ``freeze`` does not name learn (every other one is unfrozen).

    ``"input"``: the first double convolution; ``"encoder"``: the whole contracting path.
    """
    frozen = {"none": [], "input": [model.inc], "encoder": [model.inc, *model.downs]}[freeze]
    for p in model.parameters():
        p.requires_grad_(True)
    for layer in frozen:
        for p in layer.parameters():
            p.requires_grad_(False)


def _anchors(model: UNet, anchors: Sequence[Any] | None, cfg: TrainConfig,
             channel_axis: int | None, dev: torch.device) -> Anchors | None:
    """The anchors to keep, prepared (None when there are none or their weight is 0)."""
    if isinstance(anchors, Anchors):  # prepared by the caller (napari_unet.training.loop)
        return anchors if len(anchors.images) and cfg.anchor_weight > 0 else None
    return prepare_anchors(model, anchors, channel_axis, dev) \
        if anchors is not None and len(anchors) and cfg.anchor_weight > 0 else None


def _train_steps(run: _Run, samples: list[Sample], zs: list[int],
                 validate: Callable[[UNet], float] | None) -> Generator[TrainEvent, None, None]:
    """The steps after ``run.start``: train, update the record, validate, checkpoint, yield."""
    model, cfg = run.model, run.cfg
    parent = model.record.get("name") or model.record.get("source")
    t0, ema = time.perf_counter(), None
    average = _WeightAverage(model, cfg)
    for step in range(run.start + 1, cfg.steps + 1):
        loss_val, fit = run.step(samples, step)
        average.update(step)
        ema = loss_val if ema is None else 0.9 * ema + 0.1 * loss_val
        _update_record(model, parent, samples, zs, step, ema, cfg)
        metric = None
        if validate is not None and cfg.val_every and step % cfg.val_every == 0:
            model.eval()
            metric = float(validate(model))
            model.train()
        if step == cfg.steps:
            average.apply()
        if cfg.checkpoint_path and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            save_checkpoint(cfg.checkpoint_path, model, run.opt, cfg.to_dict(), step)
        yield TrainEvent(step, cfg.steps, loss_val, time.perf_counter() - t0, metric,
                         fit if run.anchored is not None else None)


class _WeightAverage:
    """The uniform average of the trainable weights after each of the last steps.

    ``cfg.average`` of the steps (0: none) are averaged; :meth:`apply` puts the average
    into the model after the last step.
    """

    def __init__(self, model: UNet, cfg: TrainConfig) -> None:
        self.params = [p for p in model.parameters() if p.requires_grad]
        self.first = cfg.steps - int(round(cfg.average * cfg.steps)) + 1
        self.mean: list[torch.Tensor] | None = None
        self.n = 0

    def update(self, step: int) -> None:
        if step < self.first:
            return
        self.n += 1
        with torch.no_grad():
            if self.mean is None:
                self.mean = [p.detach().clone() for p in self.params]
            else:
                for m, p in zip(self.mean, self.params, strict=True):
                    m.add_(p.detach() - m, alpha=1.0 / self.n)

    def apply(self) -> None:
        if self.mean is None or self.n < 2:
            return
        with torch.no_grad():
            for m, p in zip(self.mean, self.params, strict=True):
                p.copy_(m)


def _scheduler(opt: torch.optim.Optimizer, cfg: TrainConfig, start: int) -> Any:
    if cfg.schedule not in ("constant", "cosine"):
        raise ValueError(f"schedule must be 'constant' or 'cosine', got {cfg.schedule!r}")

    warm = max(1.0, cfg.warmup * cfg.steps)

    def factor(i: int) -> float:
        ramp = min(1.0, (i + start + 1) / warm)
        if cfg.schedule == "constant":
            return float(ramp)
        t = min(1.0, (i + start) / max(1, cfg.steps))
        return float(ramp * (0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * t))))  # plain float

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def augmented_crop(
    s: Sample, in_tile: int, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random ``in_tile`` crop of sample ``s``, augmented: ``(image, target, weight)``."""
    img, tgt, wgt = random_crop(s, in_tile, rng, objects=cfg.object_crops)
    img, tgt, wgt = augment_sample(img, tgt, wgt, cfg.augment, rng)
    return (np.ascontiguousarray(img, np.float32), np.ascontiguousarray(tgt, np.int64),
            np.ascontiguousarray(wgt, np.float32))


def _update_record(
    model: UNet, parent: Any, samples: list[Sample], zs: list[int], step: int,
    loss: float, cfg: TrainConfig,
) -> None:
    prev = model.record.get("history", [])
    model.record.update({
        "parent": parent,
        "data_shapes": [[n - 2 * model.halo for n in s.target.shape] for s in samples],
        "annotated_slices": list(zs),
        "steps": step,
        "final_loss": loss,
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "train_config": {k: v for k, v in cfg.to_dict().items() if k != "augment"},
        "expand_labels": target_expansion(model, cfg.targets),
        "history": prev,
    })
