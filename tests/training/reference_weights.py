"""Slow, direct references for the border weight map (tests and benchmarks only).

One exact Euclidean distance transform per instance over the whole image, keeping the two
smallest values: O(instances x pixels), obviously right, never shipped in the package.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi


def ref_distances(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Direct reference: one exact EDT per instance over the whole image, two smallest."""
    d1 = np.full(labels.shape, np.inf)
    d2 = np.full(labels.shape, np.inf)
    for i in np.unique(labels[labels > 0]):
        d = ndi.distance_transform_edt(labels != i)
        d2 = np.minimum(d2, np.maximum(d1, d))
        d1 = np.minimum(d1, d)
    return d1, d2


def ref_separation(labels: np.ndarray) -> np.ndarray:
    """Separation borders with scipy grey morphology (3x3 footprint)."""
    big = labels.max() + 1
    dil = ndi.grey_dilation(labels, size=(3, 3), mode="nearest")
    ero = ndi.grey_erosion(np.where(labels > 0, labels, big), size=(3, 3), mode="nearest")
    border = (labels > 0) & ((dil != labels) | (ero != labels))
    return np.where(border, 0, labels)


def ref_weight(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0):
    """Eq. 2 with reference distances; returns (w, border term) on a 2D label image."""
    sep = ref_separation(labels)
    d1, d2 = ref_distances(sep)
    fg = sep > 0
    n, n_fg = fg.size, int(fg.sum())
    wc = np.ones(fg.shape)
    if 0 < n_fg < n:
        wc = np.where(fg, n / (2 * n_fg), n / (2 * (n - n_fg)))
    with np.errstate(invalid="ignore"):
        term = np.where(fg, 0.0, w0 * np.exp(-((d1 + d2) ** 2) / (2 * sigma**2)))
    return wc + term, term


def ref_weight_map(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0):
    """Eq. 2 computed directly; returns (w, separated labels, d1, d2)."""
    sep = ref_separation(labels)
    d1, d2 = ref_distances(sep)
    return ref_weight(labels, w0, sigma)[0], sep, d1, d2
