"""The model's input scale: images are resampled to the size of objects the network knows.

A network learns objects of a certain size in pixels. Data at another magnification (nuclei
twice as large, EM cells at half the pixel size) lie outside what it learned, and a short
fine-tuning round cannot teach a new scale to a fixed receptive field. A model therefore
carries ``input_scale`` (:class:`napari_unet.model.UNetConfig`): every image is resampled by
that factor before the network and its probabilities are resampled back, so callers see
the input's own grid everywhere (prediction, post-processing, the self-check).

:func:`object_diameter` measures the typical object size of labels; a round sets the scale
from the corrections (:mod:`napari_unet.training.scale`).
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

#: Scales closer to 1 than this factor are treated as 1 (no resampling).
SCALE_TOLERANCE = 1.05


def input_scale(model: Any) -> float:
    """The factor by which ``model`` resamples its input (1.0 for models without one)."""
    return float(getattr(getattr(model, "config", None), "input_scale", 1.0) or 1.0)


def is_unit(scale: float) -> bool:
    """Whether ``scale`` is close enough to 1 to skip resampling."""
    return 1 / SCALE_TOLERANCE < scale < SCALE_TOLERANCE


def scaled_shape(yx: Sequence[int], scale: float) -> tuple[int, int]:
    """The ``(Y, X)`` size of a ``yx`` image resampled by ``scale`` (at least 1 pixel)."""
    return tuple(max(1, int(round(n * scale))) for n in yx)  # type: ignore[return-value]


def resample(image: np.ndarray, yx: Sequence[int]) -> np.ndarray:
    """Resample the last two axes of ``image`` to ``yx``, bilinearly (anti-aliased when shrinking).

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` or ``(C, Y, X)`` floating-point array.
    yx : sequence of int
        The new ``(Y, X)`` size.

    Returns
    -------
    numpy.ndarray
        float32 array ``(..., yx[0], yx[1])``.
    """
    a = np.asarray(image, dtype=np.float32)
    if tuple(a.shape[-2:]) == tuple(yx):
        return a.copy()
    x = torch.from_numpy(np.ascontiguousarray(a.reshape(1, -1, *a.shape[-2:])))
    shrink = yx[0] < a.shape[-2] or yx[1] < a.shape[-1]
    out = F.interpolate(x, size=tuple(int(n) for n in yx), mode="bilinear", align_corners=False,
                        antialias=shrink)
    return out.reshape(*a.shape[:-2], *yx).numpy()


def resample_labels(labels: np.ndarray, yx: Sequence[int]) -> np.ndarray:
    """Resample integer ``labels`` ``(Y, X)`` to ``yx`` by nearest neighbour (values kept)."""
    lab = np.asarray(labels)
    rows = np.minimum(((np.arange(yx[0]) + 0.5) * lab.shape[0] / yx[0]).astype(int),
                      lab.shape[0] - 1)
    cols = np.minimum(((np.arange(yx[1]) + 0.5) * lab.shape[1] / yx[1]).astype(int),
                      lab.shape[1] - 1)
    return lab[np.ix_(rows, cols)]


def scale_box(box: tuple[slice, slice], scale: float, yx: Sequence[int]) -> tuple[slice, slice]:
    """A ``(slice, slice)`` box of a slice, on the slice resampled by ``scale`` to ``yx``."""
    return tuple(slice(min(n, int(np.floor(s.start * scale))), min(n, int(np.ceil(s.stop * scale))))
                 for s, n in zip(box, yx, strict=True))  # type: ignore[return-value]


def at_scale(gen: Generator[Any, None, tuple[np.ndarray, np.ndarray | None]],
             yx: Sequence[int]) -> Generator[Any, None, tuple[np.ndarray, np.ndarray | None]]:
    """Pass ``gen``'s events through; resample its ``(probabilities, spread)`` result to ``yx``."""
    probs, spread = yield from gen
    return resample(probs, yx), (resample(spread, yx) if spread is not None else None)


def object_diameter(labels: Sequence[np.ndarray], min_objects: int = 5) -> float | None:
    """The median equivalent diameter (pixels) of the labelled objects.

    Objects touching the image border are left out when at least ``min_objects`` others
    remain (they are cut, so they look smaller). ``None`` when no object is labelled.

    Parameters
    ----------
    labels : sequence of numpy.ndarray
        Instance label images ``(Y, X)`` (0 is background).
    min_objects : int
        Keep border objects when fewer inner objects than this are found.
    """
    inner: list[float] = []
    every: list[float] = []
    for lab in labels:
        lab = np.asarray(lab)
        if not lab.any():
            continue
        ids, areas = np.unique(lab[lab > 0], return_counts=True)
        edge = np.unique(np.concatenate([lab[0], lab[-1], lab[:, 0], lab[:, -1]]))
        d = np.sqrt(4 * areas / np.pi)
        every += d.tolist()
        inner += d[~np.isin(ids, edge)].tolist()
    use = inner if len(inner) >= min_objects else every
    return float(np.median(use)) if use else None
