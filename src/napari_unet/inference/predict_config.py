"""The options of a prediction, shared by the in-memory, large-data and Segment paths."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

import numpy as np


@dataclass(frozen=True)
class PredictConfig:
    """How :func:`napari_unet.inference.predict.predict_iter` runs (not what it predicts).

    Taken by :func:`~napari_unet.inference.predict.predict_iter`,
    :func:`~napari_unet.inference.predict.predict`,
    :func:`~napari_unet.inference.largedata.predict_dask`,
    :func:`~napari_unet.inference.largedata.predict_to_store` and the Segment job; each of
    them also takes the fields as keyword arguments, which override the config's.

    Attributes
    ----------
    device : str or torch.device
        ``"auto"`` (CUDA, then MPS, then CPU), ``"cpu"``, ``"cuda"`` or ``"mps"``.
    tile : int, optional
        Input tile edge in pixels (rounded to a valid size). Default: the largest that
        fits the memory budget.
    batch_size : int, optional
        Tiles per forward pass. Default: from the memory budget.
    tta : bool, optional
        Average over the 8 dihedral transforms (flips and 90° rotations). Default: the
        model's recommendation, :func:`~napari_unet.inference.predict.recommended_tta`.
    uncertainty : bool
        Also return a per-pixel uncertainty map (entropy, or TTA spread with ``tta``).
    padding_mode : str
        ``"reflect"`` (mirror, the paper) or ``"constant"`` (zeros) beyond the border.
    memory_budget : int, optional
        Bytes of activations allowed per batch.
    precision : str
        ``"auto"`` (bf16/fp16 autocast on GPUs, bf16 on CPUs with AMX or AVX-512 BF16, else fp32),
        ``"fp32"``, ``"bf16"`` or ``"fp16"``. See :func:`napari_unet.devices.inference_dtype`.
    stack_floor : float
        Stacks: a slice whose gray-value range is narrower than this share of the stack's
        median range is stretched only to that share (0: every slice on its own). A slice of
        background noise otherwise fills with false objects
        (:func:`napari_unet.normalize.stack_range_floor`).
    """

    device: Any = "auto"
    tile: int | None = None
    batch_size: int | None = None
    tta: bool | None = None
    uncertainty: bool = False
    padding_mode: str = "reflect"
    memory_budget: int | None = None
    precision: str = "auto"
    stack_floor: float = 0.25

    @classmethod
    def merged(cls, config: PredictConfig | None, options: Mapping[str, Any]) -> PredictConfig:
        """``config`` (default: the defaults) with the keyword ``options`` applied.

        An unknown option is a TypeError, as for any function's keywords; a size that is
        given but not a positive integer is a ValueError.
        """
        cfg = replace(config or cls(), **options)
        for name in ("tile", "batch_size", "memory_budget"):
            check_positive(name, getattr(cfg, name))
        if not 0 <= cfg.stack_floor <= 1:
            raise ValueError(f"stack_floor must be in [0, 1], got {cfg.stack_floor!r}")
        return cfg


def check_positive(name: str, value: object) -> None:
    """Refuse a size that is given but not a positive integer (None: the default)."""
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
