"""Fine-tuning settings: :class:`TrainConfig`, taken by :func:`napari_unet.training.train.fine_tune`."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .augment import AugmentConfig
from .border_weights import TargetConfig, check_weight_params

__all__ = ["TrainConfig"]

FREEZE = ("none", "input", "encoder")


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
        Mixed precision: bf16/fp16 autocast on GPUs, bf16 on CPUs with AMX or AVX-512 BF16.
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
    object_crops : float
        Fraction of the crops centred on a random pixel of a labelled object rather than
        placed uniformly (as nnU-Net oversamples foreground): a corrected slice with a few
        objects otherwise gives mostly empty crops.
    freeze : str
        Layers left as they are: ``"none"``, ``"input"`` (the first double convolution, at
        full resolution: its backward pass is 40 % of a step's time) or ``"encoder"`` (the
        whole contracting path).
    average : float
        Share of the last steps whose weights are averaged into the result (a uniform
        average after each of them, as stochastic weight averaging; 0: the last step's
        weights). A resumed run starts its average again.
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
    object_crops: float = 0.0
    freeze: str = "none"
    average: float = 0.0

    def __post_init__(self) -> None:
        finite = {"lr": self.lr, "momentum": self.momentum, "weight_decay": self.weight_decay,
                  "warmup": self.warmup, "anchor_weight": self.anchor_weight,
                  "object_crops": self.object_crops, "average": self.average}
        bad = [k for k, v in finite.items() if not np.isfinite(v) or v < 0]
        if bad:
            raise ValueError(f"{bad[0]} must be a finite number >= 0, got {finite[bad[0]]}")
        if self.freeze not in FREEZE:
            raise ValueError(f"freeze must be one of {', '.join(FREEZE)}, got {self.freeze!r}")
        if self.object_crops > 1 or self.average > 1:
            raise ValueError(f"object_crops and average must be in [0, 1], got "
                             f"{self.object_crops} and {self.average}")
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
