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
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from .. import __version__, devices
from ..model import UNet, crop_to
from ..model_files import load_checkpoint, save_checkpoint
from .anchoring import Anchors, anchor_crop, anchor_loss, prepare_anchors
from .augment import AugmentConfig, augment_sample
from .border_weights import TargetConfig, check_weight_params
from .samples import (  # noqa: F401  (annotated_slices and target_expansion: public here too)
    Sample,
    annotated_slices,
    prepare_samples,
    random_crop,
    target_expansion,
)

#: Architecture used when training from scratch (CLI without ``--model``).
DEFAULT_ARCHITECTURE: dict[str, Any] = {"depth": 4, "base_channels": 16, "padding": "valid"}


@dataclass
class TrainConfig:
    """Fine-tuning settings. The defaults improve a model within minutes on a CPU.

    Parameters
    ----------
    steps : int
        Optimiser steps.
    lr : float
        Learning rate.
    optimizer : str
        ``"adamw"`` (the default), ``"adam"`` or ``"sgd"`` (momentum 0.99, the paper). SGD
        with momentum 0.99 averages a step's gradient over ~100 steps: at the paper's rates
        the first steps of a short fine-tuning kick a trained network far from its optimum
        (``docs/models.md``, "Why rounds made models worse").
    weight_decay : float
        Decoupled weight decay of AdamW.
    momentum : float
        SGD momentum.
    batch_size : int
        Crops per step (the paper: 1 large tile).
    tile : int
        Output edge of each training crop in pixels (the input adds the halo).
    w0, sigma : float
        Border weight parameters of Eq. 2.
    class_balance : bool
        Use the class-frequency term ``w_c``.
    ignore_label : int or None
        Label value marking unannotated pixels (weight 0).
    augment : AugmentConfig
        Augmentation; ``AugmentConfig(enabled=False)`` switches it off.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"mps"``.
    seed : int
        Seed for crops, augmentation and dropout.
    amp : bool
        Mixed precision: bf16/fp16 autocast on GPUs, bf16 on CPUs with AMX units.
    val_every : int
        Evaluate the ``validate`` callback every this many steps (0: never).
    checkpoint_path : str or None
        Save a resumable checkpoint here every ``checkpoint_every`` steps and at the end.
    checkpoint_every : int
        Steps between checkpoints.
    schedule : str
        Learning-rate schedule: ``"cosine"`` (decay to 1% over ``steps``) or ``"constant"``.
    warmup : float
        Fraction of ``steps`` over which the rate rises linearly from 0 (both schedules).
    expand_labels : int or None
        Grow the instances by up to this many pixels into the background before making
        the targets (:func:`napari_unet.training.border_weights.training_targets`): for cells that tile
        the image (EM), a value above the membranes' half-width (12) makes the targets thin
        closed lines between cells. None: the model's own setting
        (``record["expand_labels"]``, written by training), else 0, so fine-tuning keeps
        the targets the model was trained with.
    anchor_weight : float
        Weight of the anchoring term when ``fine_tune`` is given ``anchors``
        (:mod:`napari_unet.training.anchoring`; 0: off).
    """

    steps: int = 100
    lr: float = 1e-3
    optimizer: str = "adamw"
    weight_decay: float = 1e-4
    momentum: float = 0.99
    batch_size: int = 1
    tile: int = 256
    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True
    ignore_label: int | None = None
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    device: str = "auto"
    seed: int = 0
    amp: bool = True
    val_every: int = 0
    checkpoint_path: str | None = None
    checkpoint_every: int = 100
    schedule: str = "cosine"
    warmup: float = 0.1
    expand_labels: int | None = None
    anchor_weight: float = 1.0

    def __post_init__(self) -> None:
        finite = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                  "warmup": self.warmup, "anchor_weight": self.anchor_weight}
        bad = [k for k, v in finite.items() if not np.isfinite(v) or v < 0]
        if bad:
            raise ValueError(f"{bad[0]} must be a finite number >= 0, got {finite[bad[0]]}")
        if self.lr <= 0 or self.warmup > 1:
            raise ValueError(f"need lr > 0 and warmup <= 1, got lr={self.lr}, "
                             f"warmup={self.warmup}")
        check_weight_params(self.w0, self.sigma)
        ints = {"steps": (self.steps, 0), "batch_size": (self.batch_size, 1),
                "tile": (self.tile, 8), "checkpoint_every": (self.checkpoint_every, 1)}
        for k, (v, lo) in ints.items():
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
                raise ValueError(f"{k} must be an integer >= {lo}, got {v!r}")

    @property
    def targets(self) -> TargetConfig:
        """The fields that make the training targets and weights."""
        return TargetConfig(w0=self.w0, sigma=self.sigma, class_balance=self.class_balance,
                            ignore_label=self.ignore_label, expand_labels=self.expand_labels)

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict (for checkpoints and records)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`."""
        d = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        if isinstance(d.get("augment"), dict):
            d["augment"] = AugmentConfig(**d["augment"])
        return cls(**d)


@dataclass
class TrainEvent:
    """Progress of one completed step."""

    step: int
    steps: int
    loss: float
    elapsed: float
    val_metric: float | None = None


def make_optimizer(model: UNet, config: TrainConfig) -> torch.optim.Optimizer:
    """AdamW, Adam or SGD with momentum (the paper)."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    if config.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=config.lr,
                                 weight_decay=config.weight_decay)
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
    model: UNet,
    images: Any,
    labels: Any,
    config: TrainConfig | None = None,
    *,
    slices: Sequence[int] | None = None,
    channel_axis: int | None = None,
    resume: str | None = None,
    validate: Callable[[UNet], float] | None = None,
    anchors: Sequence[Any] | None = None,
    exclude: Mapping[int, tuple[slice, slice]] | None = None,
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
    cfg = TrainConfig() if config is None else config
    if not isinstance(cfg, TrainConfig):
        raise TypeError(f"config must be a TrainConfig, got {type(cfg).__name__}")
    if cfg.steps < 1:
        raise ValueError(f"steps must be at least 1, got {cfg.steps}")
    samples, zs = prepare_samples(model, images, labels, cfg.targets, slices, channel_axis,
                                  exclude)
    dev = devices.resolve_device(cfg.device)
    if isinstance(anchors, Anchors):  # prepared by the caller (napari_unet.training.loop)
        anchored = anchors if len(anchors.images) and cfg.anchor_weight > 0 else None
    else:
        anchored = prepare_anchors(model, anchors, channel_axis, dev) \
            if anchors is not None and len(anchors) and cfg.anchor_weight > 0 else None
    model.record["anchor_slices"] = 0 if anchored is None else len(anchored.images)
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    model.to(dev).train()
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
    parent = model.record.get("name") or model.record.get("source")
    t0, loss_val, ema = time.perf_counter(), float("nan"), None
    for step in range(start + 1, cfg.steps + 1):
        batch = [augmented_crop(samples[int(rng.integers(len(samples)))], in_tile, cfg, rng)
                 for _ in range(cfg.batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch])).to(dev)
        t = torch.from_numpy(np.stack([b[1] for b in batch])).to(dev)
        w = torch.from_numpy(np.stack([b[2] for b in batch])).to(dev)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = weighted_loss(model(x), t, w)
            if anchored is not None:
                # one anchor crop a step, whatever the batch: the term is a mean per pixel,
                # and a second crop would cost as much as the corrections themselves
                xa, qa = anchor_crop(anchored, in_tile, model.halo, rng, model.stride)
                loss = loss + cfg.anchor_weight * anchor_loss(
                    model(torch.from_numpy(xa[None]).to(dev)), torch.from_numpy(qa[None]).to(dev))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"loss became {loss.item()} at step {step}; lower the "
                                     "learning rate")
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        sched.step()
        loss_val = float(loss.detach())
        ema = loss_val if ema is None else 0.9 * ema + 0.1 * loss_val
        _update_record(model, parent, samples, zs, step, ema, cfg)
        metric = None
        if validate is not None and cfg.val_every and step % cfg.val_every == 0:
            model.eval()
            metric = float(validate(model))
            model.train()
        if cfg.checkpoint_path and (step % cfg.checkpoint_every == 0 or step == cfg.steps):
            save_checkpoint(cfg.checkpoint_path, model, opt, cfg.to_dict(), step)
        yield TrainEvent(step, cfg.steps, loss_val, time.perf_counter() - t0, metric)
    model.eval()
    return model


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
    img, tgt, wgt = random_crop(s, in_tile, rng)
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
