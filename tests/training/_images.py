"""Synthetic corrected images shared by the round's tests."""

from __future__ import annotations

import numpy as np


def blobs(seed: int, bright: bool = True, noise: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """A 96² uint8 image of up to eight round objects (bright on dark, or dark on bright)."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    labels = np.zeros((96, 96), np.uint16)
    for i in range(1, 9):
        cy, cx = rng.integers(10, 86, 2)
        labels[((yy - cy) ** 2 + (xx - cx) ** 2 < 40) & (labels == 0)] = i
    fg = (labels > 0) * 120.0
    image = (fg + 40 if bright else 200 - fg) + rng.normal(0, noise, labels.shape)
    return np.clip(image, 0, 255).astype(np.uint8), labels
