"""The Border weights dock's job (no Qt): ``w``, ``d1`` and ``d2`` of one label image.

``w(x) = w_c(x) + w0 * exp(-(d1(x) + d2(x))**2 / (2 sigma**2))`` (Ronneberger et al.,
Eq. 2, :mod:`napari_unet.training.border_weights`). The colour scale of ``w`` is set by its
border term (:func:`w_contrast_limits`): on sparse nuclei the class-balance weight of the
object interiors is far above it and would leave the borders dark.
"""

from __future__ import annotations

from collections.abc import Generator

import numpy as np

from ..jobs import Stage


def weights_iter(
    labels: np.ndarray, w0: float, sigma: float, class_balance: bool, ignore_label: int | None,
) -> Generator[Stage, None, tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]]:
    """Compute ``(w, d1, d2, w's contrast limits)`` for one 2D label image in a worker."""
    from .border_weights import border_distances, border_weight_map, separation_borders

    yield Stage("distances")  # to the separated instances, as border_weight_map measures them
    separated = separation_borders(labels, ignore_label=ignore_label)
    d1, d2 = border_distances(separated, ignore_label=ignore_label)
    yield Stage("weights")
    w = border_weight_map(labels, w0=w0, sigma=sigma, class_balance=class_balance,
                          ignore_label=ignore_label)
    w_c = border_weight_map(labels, w0=0.0, sigma=sigma, class_balance=class_balance,
                            ignore_label=ignore_label)  # no border term: cheap
    return (np.asarray(w, np.float32), np.asarray(d1, np.float32), np.asarray(d2, np.float32),
            w_contrast_limits(w, w_c))


#: Percentile of the border term that reaches the top of the colour scale.
BORDER_PERCENTILE = 99.5


def w_contrast_limits(w: np.ndarray, w_c: np.ndarray) -> tuple[float, float]:
    """Contrast limits of ``w`` that show its border term, not the class-balance interiors.

    ``w_c`` takes one value per class, so an object interior that saturates the scale
    hides nothing; the border term ``w - w_c`` is what varies. The upper limit is the
    class weight where the border term lives plus its 99.5th percentile (over the pixels
    where it is above 1% of its maximum); without a border term it is ``w.max()``.

    Parameters
    ----------
    w : numpy.ndarray
        The weight map (Eq. 2).
    w_c : numpy.ndarray
        Its class-balance part alone (``border_weight_map(..., w0=0)``).

    Returns
    -------
    tuple of float
        ``(low, high)``.
    """
    lo, top = float(np.min(w)), float(np.max(w))
    border = np.asarray(w, np.float64) - w_c
    peak = float(border.max()) if border.size else 0.0
    strong = border > 0.01 * peak if peak > 1e-6 * max(1.0, abs(top)) else np.zeros(border.shape, bool)
    if not strong.any():
        return lo, top if top > lo else lo + 1.0
    hi = float(w_c[strong].max()) + float(np.percentile(border[strong], BORDER_PERCENTILE))
    hi = min(hi, top)
    return lo, hi if hi > lo else lo + 1.0


def clip_distance(d: np.ndarray) -> np.ndarray:
    """Replace infinite distances (fewer than two objects) by the image diagonal."""
    cap = float(np.hypot(*d.shape[-2:]))
    return np.where(np.isfinite(d), np.minimum(d, cap), cap).astype(np.float32)
