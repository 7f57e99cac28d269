"""The input scale of a round's new version, measured on the corrections.

A model records the median diameter of the objects it learned, in the pixels its network
sees (``record["object_diameter"]``). The corrections give the user's own object size; when
the two differ by more than :attr:`ScaleConfig.min_ratio`, the new version resamples its
input by their ratio (:mod:`napari_unet.inference.rescale`), as cellpose does with its
diameter. The parent then predicts the corrected slices at both scales, and the measured
scale is dropped only if it is clearly worse there.

The round trains on the corrections resampled to the new scale (:func:`to_scale`); the
self-check predicts the original slices, each model at its own scale.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..inference.rescale import (
    input_scale,
    is_unit,
    object_diameter,
    resample,
    resample_labels,
    scale_box,
    scaled_shape,
)


@dataclass
class ScaleConfig:
    """How a round picks its new version's input scale.

    Parameters
    ----------
    mode : str
        ``"auto"`` (measure it on the corrections), ``"keep"`` (the parent's) or a number
        given as text (e.g. ``"0.5"``: objects twice as large as the network's).
    min_ratio : float
        Change the scale only when the measured one differs from the parent's by more than
        this factor (either way).
    limits : tuple of float
        Range of the measured scale.
    margin_f1, margin_rand : float
        The parent's score on the corrected slices at its own scale must beat its score at
        the measured scale by more than this to keep its scale.
    """

    mode: str = "auto"
    min_ratio: float = 1.3
    limits: tuple[float, float] = (0.25, 4.0)
    margin_f1: float = 0.05
    margin_rand: float = 0.01

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "keep"):
            try:
                value = float(self.mode)
            except ValueError:
                raise ValueError(f"scale must be 'auto', 'keep' or a number, got {self.mode!r}"
                                 ) from None
            if not 0.1 <= value <= 10:
                raise ValueError(f"scale must be in [0.1, 10], got {value}")


def measured_scale(model: Any, labels: Sequence[np.ndarray], cfg: ScaleConfig) -> float | None:
    """The input scale the corrections call for, or None to keep ``model``'s.

    ``None`` when the model records no object size, the corrections hold no object, or the
    measured scale is within ``cfg.min_ratio`` of the model's.
    """
    current = input_scale(model)
    if cfg.mode == "keep":
        return None
    if cfg.mode != "auto":
        value = float(cfg.mode)
        return None if math.isclose(value, current) else value
    known = (getattr(model, "record", None) or {}).get("object_diameter")
    seen = object_diameter(labels)
    if not known or not seen:
        return None
    scale = float(np.clip(float(known) / seen, *cfg.limits))
    scale = float(f"{scale:.2g}")
    return None if abs(math.log(scale / current)) < math.log(cfg.min_ratio) else scale


def with_scale(model: Any, scale: float) -> Any:
    """A copy of ``model`` that resamples its input by ``scale``."""
    out = copy.deepcopy(model)
    out.config.input_scale = float(scale)
    return out


def keep_parent_scale(quality_parent: float, quality_scaled: float, fill: bool,
                      cfg: ScaleConfig) -> bool:
    """Whether the parent is clearly better on the corrections at its own scale.

    ``quality_*`` are F1 (higher is better) or, when ``fill`` (cells filling the image),
    adapted Rand errors (lower is better).
    """
    if fill:
        return quality_parent < quality_scaled - cfg.margin_rand
    return quality_parent > quality_scaled + cfg.margin_f1


def to_scale(scale: float, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
             boxes: dict[int, Any], anchors: Sequence[np.ndarray] | None,
             ) -> tuple[list[np.ndarray], list[np.ndarray], dict[int, Any], list[np.ndarray] | None]:
    """The round's training data resampled by ``scale`` (unchanged when it is about 1).

    ``images`` are ``(C, Y, X)``, ``labels`` ``(Y, X)`` integer, ``boxes`` the held-back
    ``(slice, slice)`` per slice index, ``anchors`` 2D or ``(C, Y, X)`` slices.
    """
    if is_unit(scale):
        return list(images), list(labels), dict(boxes), \
            (list(anchors) if anchors is not None else None)
    imgs, labs, out_boxes = [], [], {}
    for i, (img, lab) in enumerate(zip(images, labels, strict=True)):
        yx = scaled_shape(lab.shape, scale)
        imgs.append(resample(img, yx))
        labs.append(resample_labels(lab, yx))
        if i in boxes:
            out_boxes[i] = scale_box(boxes[i], scale, yx)
    scaled = None if anchors is None else [
        resample(np.asarray(a, np.float32), scaled_shape(np.shape(a)[-2:], scale)) for a in anchors]
    return imgs, labs, out_boxes, scaled
