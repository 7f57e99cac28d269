"""Fine-tuning engine: a direct training loop exposed as a generator.

``for event in fine_tune(model, images, labels, config): ...`` trains ``model`` in place
on the annotated slices with the paper's weighted cross-entropy (Eq. 1 with the border
weights of Eq. 2) and elastic augmentation. Stopping the iteration cancels; the model is
then at its last completed step. The GUI, the CLI and the benchmarks drive this one loop.
"""

from __future__ import annotations

import datetime as _dt
import time
from collections.abc import Callable, Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from . import __version__, devices
from .augment import AugmentConfig, augment_sample
from .inputs import as_image_view
from .io import load_checkpoint, save_checkpoint
from .model import UNet, crop_to
from .normalize import Normalization
from .weights import training_targets

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
        ``"sgd"`` (momentum 0.99, the paper) or ``"adam"``.
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
        Learning-rate schedule: ``"cosine"`` (decay to 1% over ``steps``, so a short run
        with momentum 0.99 ends settled) or ``"constant"``.    expand_labels : int or None
        Grow the instances by up to this many pixels into the background before making
        the targets (:func:`napari_unet.weights.training_targets`): for cells that tile
        the image (EM), a value above the membranes' half-width (12) makes the targets thin
        closed lines between cells. None: the model's own setting
        (``record["expand_labels"]``, written by training), else 0, so fine-tuning keeps
        the targets the model was trained with.
    """

    steps: int = 100
    lr: float = 1e-3
    optimizer: str = "sgd"
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
    expand_labels: int | None = None

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


def annotated_slices(labels: np.ndarray, ignore_label: int | None = None) -> list[int]:
    """Slices of a ``(Z, Y, X)`` label stack holding any annotation (``[0]`` for 2D)."""
    lab = np.asarray(labels)
    if lab.ndim == 2:
        return [0] if _has_annotation(lab, ignore_label) else []
    return [z for z in range(lab.shape[0]) if _has_annotation(lab[z], ignore_label)]


def _has_annotation(lab: np.ndarray, ignore_label: int | None) -> bool:
    if ignore_label is None:
        return bool(np.any(lab != 0))
    return bool(np.any((lab != ignore_label) & (lab != 0)))


@dataclass
class _Sample:
    image: np.ndarray  # (C, Y+2h, X+2h) normalised, mirrored by the halo
    target: np.ndarray  # (Y+2h, X+2h) int64, 0 outside the image
    weight: np.ndarray  # (Y+2h, X+2h) float32, 0 outside the image and on ignored pixels


def target_expansion(model: UNet, config: TrainConfig) -> int:
    """Label expansion of the training targets: ``config``'s, else the model's, else 0."""
    if config.expand_labels is not None:
        value = config.expand_labels
    else:
        value = getattr(model, "record", {}).get("expand_labels", 0) or 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"expand_labels must be a non-negative integer, got {value!r}")
    return int(value)


def prepare_samples(
    model: UNet, images: Any, labels: Any, config: TrainConfig,
    slices: Sequence[int] | None = None, channel_axis: int | None = None,
) -> tuple[list[_Sample], list[int]]:
    """Validate inputs and build normalised, padded training samples of the annotated slices.

    ``images`` and ``labels`` are one array each, or two equally long lists of arrays
    (images of different sizes); ``slices`` then index the concatenated slices.

    Raises
    ------
    ValueError
        Shape mismatch, no annotated slice, labels with a single class, NaN images or a
        model whose input channels do not match.
    """
    if isinstance(images, (list, tuple)) != isinstance(labels, (list, tuple)):
        raise ValueError("pass images and labels both as arrays or both as lists")
    pairs = list(zip(images, labels, strict=True)) if isinstance(images, (list, tuple)) \
        else [(images, labels)]
    if not pairs:
        raise ValueError("no images given")
    slabs = []
    for img, lab in pairs:
        view = as_image_view(img, model.in_channels, channel_axis)
        lab = np.asarray(lab)
        expected = (view.n_slices, *view.yx) if view.is_stack else view.yx
        if lab.shape != tuple(expected):
            raise ValueError(f"labels shape {lab.shape} differs from the image's spatial shape "
                             f"{tuple(expected)}")
        if lab.dtype.kind not in "uib":
            raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
        lab3 = lab if view.is_stack else lab[None]
        slabs += [(view, z, lab3[z]) for z in range(view.n_slices)]
    if slices is not None:
        zs = [int(z) for z in slices]
        bad = [z for z in zs if not 0 <= z < len(slabs)]
        if bad:
            raise ValueError(f"slice index {bad[0]} out of range for {len(slabs)} slices")
    else:
        zs = [i for i, (_, _, lab) in enumerate(slabs) if _has_annotation(lab, config.ignore_label)]
    if not zs:
        raise ValueError("no annotated slice: paint labels on at least one slice first")
    norm = Normalization.from_dict(model.config.normalization)
    h = model.halo
    samples, n_fg, n_bg = [], 0, 0
    for i in zs:
        view, z, lab = slabs[i]
        img = norm(view.slice(z), channel_axis=0)
        target, weight = training_targets(lab, w0=config.w0, sigma=config.sigma,
                                          class_balance=config.class_balance,
                                          ignore_label=config.ignore_label,
                                          expand_labels=target_expansion(model, config))
        n_fg += int(((target == 1) & (weight > 0)).sum())
        n_bg += int(((target == 0) & (weight > 0)).sum())
        mode = "reflect" if min(img.shape[-2:]) > 1 else "symmetric"
        samples.append(_Sample(
            np.pad(img, ((0, 0), (h, h), (h, h)), mode=mode),
            np.pad(target.astype(np.int64), h),
            np.pad(weight.astype(np.float32), h),
        ))
    if n_fg == 0 or n_bg == 0:
        raise ValueError("the annotated labels hold only one class: training needs both "
                         "foreground and background pixels")
    return samples, zs


def _random_crop(
    s: _Sample, size: int, rng: np.random.Generator, tries: int = 10
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` crop with some annotated pixels (mirror-padded if too small)."""
    img, tgt, wgt = s.image, s.target, s.weight
    ph, pw = max(0, size - tgt.shape[0]), max(0, size - tgt.shape[1])
    if ph or pw:
        img = np.pad(img, ((0, 0), (0, ph), (0, pw)), mode="symmetric")
        tgt, wgt = np.pad(tgt, ((0, ph), (0, pw))), np.pad(wgt, ((0, ph), (0, pw)))
    for _ in range(tries):
        y = int(rng.integers(0, tgt.shape[0] - size + 1))
        x = int(rng.integers(0, tgt.shape[1] - size + 1))
        w = wgt[y : y + size, x : x + size]
        if w.any():
            break
    return img[:, y : y + size, x : x + size], tgt[y : y + size, x : x + size], w


def make_optimizer(model: UNet, config: TrainConfig) -> torch.optim.Optimizer:
    """SGD with momentum (the paper) or Adam."""
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum)
    if config.optimizer == "adam":
        return torch.optim.Adam(model.parameters(), lr=config.lr)
    raise ValueError(f"optimizer must be 'sgd' or 'adam', got {config.optimizer!r}")


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
) -> Generator[TrainEvent, None, UNet]:
    """Train ``model`` in place on the annotated slices, yielding one event per step.

    Parameters
    ----------
    model : UNet
        Trained in place; pass a copy to keep the original.
    images : array-like
        ``(Y, X)``, ``(Z, Y, X)`` or with channels (see :func:`napari_unet.inputs.as_image_view`).
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

    Yields
    ------
    TrainEvent
        After each completed step.

    Returns
    -------
    UNet
        The trained model (the same object), with ``model.record`` updated.
    """
    cfg = config or TrainConfig()
    samples, zs = prepare_samples(model, images, labels, cfg, slices, channel_axis)
    dev = devices.resolve_device(cfg.device)
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
        batch = [_augmented_crop(samples[int(rng.integers(len(samples)))], in_tile, cfg, rng)
                 for _ in range(cfg.batch_size)]
        x = torch.from_numpy(np.stack([b[0] for b in batch])).to(dev)
        t = torch.from_numpy(np.stack([b[1] for b in batch])).to(dev)
        w = torch.from_numpy(np.stack([b[2] for b in batch])).to(dev)
        opt.zero_grad(set_to_none=True)
        with torch.autocast(dev.type, dtype=amp, enabled=amp is not None):
            loss = weighted_loss(model(x), t, w)
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

    def factor(i: int) -> float:
        if cfg.schedule == "constant":
            return 1.0
        t = min(1.0, (i + start) / max(1, cfg.steps))
        return float(0.01 + 0.99 * 0.5 * (1 + np.cos(np.pi * t)))  # plain float: checkpoints

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def _augmented_crop(
    s: _Sample, in_tile: int, cfg: TrainConfig, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    img, tgt, wgt = _random_crop(s, in_tile, rng)
    img, tgt, wgt = augment_sample(img, tgt, wgt, cfg.augment, rng)
    return (np.ascontiguousarray(img, np.float32), np.ascontiguousarray(tgt, np.int64),
            np.ascontiguousarray(wgt, np.float32))


def _update_record(
    model: UNet, parent: Any, samples: list[_Sample], zs: list[int], step: int,
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
        "expand_labels": target_expansion(model, cfg),
        "history": prev,
    })
