"""Input normalisation, stored with the model and applied identically at training and prediction."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Normalization:
    """Per-image intensity normalisation.

    Parameters
    ----------
    mode : str
        ``"percentile"``: map the ``low`` and ``high`` percentiles of each image (over all
        its pixels, per channel) to 0 and 1. ``"minmax"``: the same with min and max.
        ``"fixed"``: ``(x - offset) / scale``. ``"none"``: cast to float32 only.
    low, high : float
        Percentiles for ``"percentile"``.
    offset, scale : float
        Constants for ``"fixed"``.
    invert : bool
        Map the result ``x`` to ``1 - x`` (``-x`` for ``"fixed"`` and ``"none"``): the
        polarity of the images is flipped, e.g. dark nuclei on a bright background for a
        network trained on bright nuclei. Set by a fine-tuning round when the corrections
        say so (:mod:`napari_unet.training.loop`).
    """

    mode: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    offset: float = 0.0
    scale: float = 1.0
    invert: bool = False

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        """Build from a stored dict, ignoring unknown keys."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def __call__(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """Return a float32 normalised copy of ``image``.

        Parameters
        ----------
        image : numpy.ndarray
            One image (2D, or channels on ``channel_axis``).
        channel_axis : int, optional
            Channels are normalised independently along this axis.

        Returns
        -------
        numpy.ndarray
            float32 array of the same shape.
        """
        out = self._normalise(np.asarray(image, dtype=np.float32), channel_axis)
        return (np.float32(0.0 if self.mode in ("fixed", "none") else 1.0) - out) \
            if self.invert else out

    def _normalise(self, x: np.ndarray, channel_axis: int | None) -> np.ndarray:
        if self.mode == "none":
            return x.copy()
        if self.mode == "fixed":
            return (x - np.float32(self.offset)) / np.float32(self.scale)
        axes = tuple(i for i in range(x.ndim) if channel_axis is None or i != channel_axis % x.ndim)
        if self.mode == "percentile":
            # a strided subsample keeps percentiles cheap on large images
            step = max(1, int(np.sqrt(x.size / 1e6)))
            sub = x[(slice(None),) * (x.ndim - 2) + (slice(None, None, step),) * 2]
            lo = np.percentile(sub, self.low, axis=axes, keepdims=True)
            hi = np.percentile(sub, self.high, axis=axes, keepdims=True)
        elif self.mode == "minmax":
            lo = x.min(axis=axes, keepdims=True)
            hi = x.max(axis=axes, keepdims=True)
        else:
            raise ValueError(f"unknown normalisation mode {self.mode!r}")
        scale = np.where(hi - lo > 1e-6, hi - lo, 1.0).astype(np.float32)
        return (x - lo.astype(np.float32)) / scale
