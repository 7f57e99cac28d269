"""The input scale of a round's new version, measured on the corrections.

A model records the median diameter of the objects it learned, in the pixels its network
sees (``record["object_diameter"]``). The corrections give the user's own object size; when
the two differ by more than :attr:`ScaleConfig.min_ratio`, the new version resamples its
input by their ratio (:mod:`napari_unet.inference.rescale`), as cellpose does with its
diameter. The parent then predicts the corrected slices at the measured scale, halfway
and its own (:func:`candidate_scales`); the first within a margin of the best is taken.

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
from ..model_record import ModelRecord


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
        A scale is taken when the parent's score on the corrected slices there is within
        this of its best score over the candidate scales.
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
    known = ModelRecord.of(model).object_diameter
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


def candidate_scales(measured: float, current: float) -> list[float]:
    """The scales a round tries, in order of preference: measured, halfway (geometric), current.

    Upsampling cannot restore detail the images lack (EM cells at half the pixel size: the
    parent's error at the test crops was 0.047 at x1.4 and 0.063 at the measured x2.1), so
    the halfway scale is asked too.
    """
    mid = float(f"{math.sqrt(measured * current):.2g}")
    return list(dict.fromkeys([measured, mid, current]))


def pick_scale(scored: Sequence[tuple[float, float]], fill: bool, cfg: ScaleConfig) -> float:
    """The first ``(scale, quality)`` within the margin of the best, in the given order.

    ``quality`` is the parent's F1 on the corrected slices (higher is better) or, when
    ``fill`` (cells filling the image), its adapted Rand error (lower is better).
    """
    sign = -1.0 if fill else 1.0
    best = max(sign * q for _, q in scored)
    margin = cfg.margin_rand if fill else cfg.margin_f1
    return next(scale for scale, q in scored if sign * q >= best - margin)


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
