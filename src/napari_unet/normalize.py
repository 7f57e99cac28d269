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
    smooth : float
        Width (sigma, pixels) of a Gaussian applied to the normalised image, edges mirrored
        (0: none). Set by a round when the corrections show noisy images
        (:mod:`napari_unet.training.denoise`).
    """

    mode: str = "percentile"
    low: float = 1.0
    high: float = 99.8
    offset: float = 0.0
    scale: float = 1.0
    invert: bool = False
    smooth: float = 0.0

    @classmethod
    def from_dict(cls, d: dict) -> Normalization:
        """Build from a stored dict, ignoring unknown keys."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})

    def __call__(self, image: np.ndarray, channel_axis: int | None = None,
                 min_range: float | np.ndarray = 0.0, smooth: bool = True) -> np.ndarray:
        """Return a float32 normalised copy of ``image``.

        Parameters
        ----------
        image : numpy.ndarray
            One image (2D, or channels on ``channel_axis``).
        channel_axis : int, optional
            Channels are normalised independently along this axis.
        min_range : float or numpy.ndarray
            ``"percentile"`` and ``"minmax"``: the smallest gray-value range (one per
            channel, or one for all) that is stretched to 0-1; a narrower image is stretched
            less. A stack passes a share of its typical range
            (:func:`stack_range_floor`), so that a slice of background noise is not stretched
            into "objects" (0: off, each image on its own).
        smooth : bool
            Apply :attr:`smooth` (see :meth:`smoothed`).

        Returns
        -------
        numpy.ndarray
            float32 array of the same shape.
        """
        out = self._normalise(np.asarray(image, dtype=np.float32), channel_axis, min_range)
        if smooth:
            out = self.smoothed(out, channel_axis)
        return (np.float32(0.0 if self.mode in ("fixed", "none") else 1.0) - out) \
            if self.invert else out

    def smoothed(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """``image`` through the Gaussian of :attr:`smooth` (edges mirrored; channels apart).

        A resampled model smooths in its network's pixels: prediction normalises without
        smoothing (``smooth=False``), resamples, then calls this.
        """
        if self.smooth <= 0:
            return image
        from scipy.ndimage import gaussian_filter

        sig = [float(self.smooth)] * image.ndim
        if channel_axis is not None:
            sig[channel_axis % image.ndim] = 0.0
        return gaussian_filter(image, sig, mode="mirror").astype(np.float32, copy=False)

    def value_range(self, image: np.ndarray, channel_axis: int | None = None) -> np.ndarray:
        """The gray-value range that is stretched to 0-1, per channel.

        ``(C,)``, or ``(1,)`` without ``channel_axis``; NaN for ``"fixed"`` and ``"none"``.
        """
        x = np.asarray(image, dtype=np.float32)
        if self.mode not in ("percentile", "minmax"):
            n = 1 if channel_axis is None else x.shape[channel_axis]
            return np.full(n, np.nan, np.float32)
        lo, hi = self._bounds(x, channel_axis)
        return (hi - lo).astype(np.float32).ravel()

    def _bounds(self, x: np.ndarray, channel_axis: int | None) -> tuple[np.ndarray, np.ndarray]:
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
        return lo, hi

    def _normalise(self, x: np.ndarray, channel_axis: int | None,
                   min_range: float | np.ndarray) -> np.ndarray:
        if self.mode == "none":
            return x.copy()
        if self.mode == "fixed":
            return (x - np.float32(self.offset)) / np.float32(self.scale)
        lo, hi = self._bounds(x, channel_axis)
        floor = np.asarray(min_range, np.float32)
        if floor.size > 1:  # one per channel: shaped like lo (channels kept, others 1)
            floor = floor.reshape(lo.shape)
        span = np.maximum(hi - lo, floor)
        scale = np.where(span > 1e-6, span, 1.0).astype(np.float32)
        return (x - lo.astype(np.float32)) / scale


def stack_range_floor(norm: Normalization, slices: list[np.ndarray], share: float,
                      ) -> np.ndarray:
    """The range floor of a stack: ``share`` of the median range of its slices, per channel.

    Parameters
    ----------
    norm : Normalization
        The model's normalisation.
    slices : list of numpy.ndarray
        ``(C, Y, X)`` slices of the stack (a sample of them is enough).
    share : float
        Share of the median range below which a slice is not stretched further (0: off).

    Returns
    -------
    numpy.ndarray
        ``(C,)`` gray-value ranges (zeros when off, with fewer than two slices, or for a
        fixed normalisation).

    Notes
    -----
    Per-image percentile normalisation stretches the range between the low and high
    percentiles of each image to 0-1. An empty slice of a stack (a few gray levels of
    background noise) is then stretched as much as a slice full of nuclei, and the network
    finds hundreds of "objects" in the noise (docs/models.md). With the floor such a slice
    keeps the contrast it has relative to its stack.
    """
    n_ch = slices[0].shape[0] if slices else 1
    if share <= 0 or len(slices) < 2 or norm.mode not in ("percentile", "minmax"):
        return np.zeros(n_ch, np.float32)
    ranges = np.stack([norm.value_range(s, channel_axis=0) for s in slices])
    return (share * np.median(ranges, axis=0)).astype(np.float32)
