"""Data augmentation for fine-tuning, as in the U-Net paper (Ronneberger et al., 2015).

Elastic deformation: displacement vectors on a coarse grid (3x3) drawn from N(0, 10 px),
bicubically interpolated to every pixel. Shifts, rotations and flips are folded into the
same coordinate map, so a sample is resampled once: image and weights bilinearly, labels
by nearest neighbour (no new label values), borders mirrored (no empty corners). Gray-value
changes (gamma, contrast, brightness) act on the image only. Sampling uses torch's
``grid_sample`` on the CPU: about 10 ms for a 512x512 sample on one core.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from ._resample import source_coordinates, upsample_field, warp

__all__ = ["AugmentConfig", "augment_sample", "displacement_field", "elastic_deform"]

RngLike = np.random.Generator | int | None


@dataclass
class AugmentConfig:
    """Which augmentations :func:`augment_sample` applies, and how strongly.

    Parameters
    ----------
    enabled : bool
        Master switch; ``False`` returns unchanged copies.
    elastic, grid, sigma : bool, int, float
        Elastic deformation: ``grid x grid`` displacement vectors drawn from
        ``N(0, sigma)`` pixels (3 and 10 in the paper).
    flips : bool
        Random flips along each axis (probability 1/2 each).
    rotate, max_angle, rot90 : bool, float, bool
        Random rotation: a uniform angle in ``[-max_angle, max_angle]`` degrees plus, if
        ``rot90``, a random multiple of 90 degrees (180 for non-square samples).
    shift : float
        Largest random shift in pixels along each axis (uniform; 0 disables).
    intensity : bool
        Master switch of the gray-value changes (image only, normalised to ~[0, 1]).
    gamma, contrast, brightness : tuple of float or None
        Ranges of the gamma exponent (log-uniform), the contrast factor about the
        per-channel mean and the added offset; ``None`` disables one.
    image_order : int
        Image interpolation: 1 bilinear, 3 bicubic (weights: always bilinear).
    """

    enabled: bool = True
    elastic: bool = True
    grid: int = 3
    sigma: float = 10.0
    flips: bool = True
    rotate: bool = True
    max_angle: float = 45.0
    rot90: bool = True
    shift: float = 16.0
    intensity: bool = True
    gamma: tuple[float, float] | None = (0.7, 1.4)
    contrast: tuple[float, float] | None = (0.75, 1.25)
    brightness: tuple[float, float] | None = (-0.1, 0.1)
    image_order: int = 1

    def __post_init__(self) -> None:
        if self.grid < 1:
            raise ValueError(f"grid must be >= 1, got {self.grid}")
        if min(self.sigma, self.shift, self.max_angle) < 0 or self.image_order not in (1, 3):
            raise ValueError("need sigma, shift, max_angle >= 0 and image_order 1 or 3")
        for name in ("gamma", "contrast", "brightness"):
            value = getattr(self, name)
            if value is not None:
                lo, hi = (float(v) for v in value)
                if lo > hi:
                    raise ValueError(f"{name} range must be (low, high), got {value}")
                setattr(self, name, (lo, hi))
        if self.gamma is not None and self.gamma[0] <= 0:
            raise ValueError("gamma range must be positive")

    @property
    def spatial(self) -> bool:
        """Whether any geometric transform is switched on."""
        return (
            (self.elastic and self.sigma > 0)
            or self.flips
            or (self.rotate and (self.max_angle > 0 or self.rot90))
            or self.shift > 0
        )

    def to_dict(self) -> dict[str, Any]:
        """Return a plain dict (for storing with a model)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AugmentConfig:
        """Build from a stored dict, ignoring unknown keys."""
        return cls(**{k: v for k, v in d.items() if k in cls.__dataclass_fields__})


# --------------------------------------------------------------------------- helpers


def _rng(rng: RngLike) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def _check(
    image: np.ndarray, labels: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    image, labels = np.asarray(image), np.asarray(labels)
    weights = None if weights is None else np.asarray(weights)
    if (
        image.ndim not in (2, 3)
        or labels.shape != image.shape[-2:]
        or (weights is not None and weights.shape != labels.shape)
    ):
        shapes = (image.shape, labels.shape, None if weights is None else weights.shape)
        raise ValueError(f"need image (Y, X) or (C, Y, X), labels/weights (Y, X), got {shapes}")
    return image, labels, weights


def _copies(
    image: np.ndarray, labels: np.ndarray, weights: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    return image.copy(), labels.copy(), None if weights is None else weights.copy()


# --------------------------------------------------------------------------- public API


def displacement_field(
    shape: tuple[int, int], grid: int = 3, sigma: float = 10.0, rng: RngLike = None
) -> np.ndarray:
    """Random smooth displacement field as in the U-Net paper.

    Parameters
    ----------
    shape : tuple of int
        ``(Y, X)`` of the field.
    grid : int
        Grid points per axis; their displacements are drawn from ``N(0, sigma)``.
    sigma : float
        Standard deviation of the grid displacements in pixels.
    rng : numpy.random.Generator or int, optional
        Random generator or seed.

    Returns
    -------
    numpy.ndarray
        float32 array ``(2, Y, X)``: the y and x displacements, bicubically interpolated
        from the grid (grid nodes on pixels ``j * (n - 1) / (grid - 1)``).
    """
    rng = _rng(rng)
    nodes = rng.normal(0.0, sigma, size=(2, grid, grid)).astype(np.float32)
    return upsample_field(nodes, shape)


def elastic_deform(
    image: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    *,
    grid: int = 3,
    sigma: float = 10.0,
    rng: RngLike = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Elastically deform an image, its labels and its weight map with one random field.

    Displacements on a coarse ``grid x grid`` grid are drawn from ``N(0, sigma)`` and
    interpolated bicubically to every pixel (see :func:`displacement_field`). Output
    pixel ``p`` takes the input value at ``p + d(p)``, mirrored at the borders.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` or ``(C, Y, X)``, any numeric dtype; sampled bilinearly.
    labels : numpy.ndarray
        ``(Y, X)`` integer labels; sampled by nearest neighbour (no new values).
    weights : numpy.ndarray, optional
        ``(Y, X)`` pixel weights; sampled bilinearly. ``None`` is passed through.
    grid : int
        Grid points per axis (3 in the paper).
    sigma : float
        Standard deviation of the grid displacements in pixels (10 in the paper).
    rng : numpy.random.Generator or int, optional
        Random generator or seed; the result is deterministic for a given seed.

    Returns
    -------
    image, labels, weights : numpy.ndarray
        New arrays of the input shapes. Floating images and weights keep their dtype,
        others become float32; labels keep their dtype. ``weights`` is ``None`` if given
        as ``None``. The inputs are not modified.
    """
    if isinstance(grid, bool) or not isinstance(grid, (int, np.integer)) or grid < 1:
        raise ValueError(f"grid must be a positive integer, got {grid!r}")
    if not (np.isfinite(sigma) and sigma >= 0):
        raise ValueError(f"sigma must be a finite number >= 0, got {sigma}")
    image, labels, weights = _check(image, labels, weights)
    disp = displacement_field(labels.shape, grid, sigma, rng)
    ys, xs = source_coordinates(labels.shape, np.eye(2), np.zeros(2), disp)
    return warp(image, labels, weights, ys, xs)


def augment_sample(
    image: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None = None,
    config: AugmentConfig | None = None,
    rng: RngLike = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Randomly augment one training sample (image, labels and weights together).

    Flips, rotations, shift and the elastic field are composed into one coordinate map
    and the sample is resampled once (labels by nearest neighbour, image and weights
    bilinearly, borders mirrored); then gamma, contrast and brightness changes are
    applied to the image only, in that order.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` or ``(C, Y, X)``, normalised to about [0, 1].
    labels : numpy.ndarray
        ``(Y, X)`` integer labels.
    weights : numpy.ndarray, optional
        ``(Y, X)`` pixel weights, or ``None`` (passed through).
    config : AugmentConfig, optional
        What to apply; defaults to ``AugmentConfig()``.
    rng : numpy.random.Generator or int, optional
        Random generator or seed. All random numbers are drawn whatever is switched on,
        so switching one augmentation off leaves the others' draws unchanged.

    Returns
    -------
    image, labels, weights : numpy.ndarray
        New arrays of the input shapes (see :func:`elastic_deform` for dtypes). With
        ``config.enabled`` false (or nothing switched on) unchanged copies.
    """
    cfg = AugmentConfig() if config is None else config
    image, labels, weights = _check(image, labels, weights)
    if not cfg.enabled:
        return _copies(image, labels, weights)
    draws = _Draws.from_rng(_rng(rng), cfg.grid)
    if cfg.spatial:
        matrix, offset, disp = _spatial_map(cfg, draws, labels.shape)
        ys, xs = source_coordinates(labels.shape, matrix, offset, disp)
        image, labels, weights = warp(image, labels, weights, ys, xs, cfg.image_order)
    else:
        image, labels, weights = _copies(image, labels, weights)
    if cfg.intensity and (cfg.gamma or cfg.contrast or cfg.brightness):
        image = _change_gray_values(image, cfg, draws)
    return image, labels, weights


@dataclass(frozen=True)
class _Draws:
    """The random numbers of one :func:`augment_sample` call, drawn whatever is switched on."""

    nodes: np.ndarray  # (2, grid, grid) float32 from N(0, 1): the elastic grid
    flip: np.ndarray  # (2,) bool: flip y, flip x
    k90: int  # multiple of 90 degrees, 0..3
    angle: float  # in [-1, 1): fraction of ``max_angle``
    shift: np.ndarray  # (2,) in [-1, 1): fractions of ``shift``
    gamma_u: float  # in [0, 1): position in the gamma range (log scale)
    contrast_u: float  # in [0, 1): position in the contrast range
    bright_u: float  # in [0, 1): position in the brightness range

    @classmethod
    def from_rng(cls, rng: np.random.Generator, grid: int) -> _Draws:
        """Draw everything in a fixed order (the order is part of the reproducibility).

        Parameters
        ----------
        rng : numpy.random.Generator
            The generator; advanced by the same amount whatever the configuration.
        grid : int
            Grid points per axis of the elastic field.

        Returns
        -------
        _Draws
            The draws.
        """
        nodes = rng.normal(0.0, 1.0, size=(2, grid, grid)).astype(np.float32)
        flip = rng.random(2) < 0.5
        k90 = int(rng.integers(4))
        angle = rng.uniform(-1.0, 1.0)
        shift = rng.uniform(-1.0, 1.0, size=2)
        gamma_u, contrast_u, bright_u = rng.random(3)
        return cls(nodes, flip, k90, angle, shift, gamma_u, contrast_u, bright_u)


def _spatial_map(
    cfg: AugmentConfig, draws: _Draws, shape: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """The geometric part of an augmentation: flips and rotation, shift, elastic field.

    Parameters
    ----------
    cfg : AugmentConfig
        What is switched on.
    draws : _Draws
        The sample's random numbers.
    shape : tuple of int
        ``(Y, X)`` of the sample.

    Returns
    -------
    matrix, offset, disp : numpy.ndarray
        The 2x2 linear map, the shift in pixels and the ``(2, Y, X)`` displacement field
        (None without elastic deformation), for
        :func:`~napari_unet.training._resample.source_coordinates`.
    """
    ny, nx = shape
    matrix = np.eye(2)
    if cfg.flips:
        matrix = np.diag(np.where(draws.flip, -1.0, 1.0))
    if cfg.rotate:
        k90 = draws.k90
        if cfg.rot90 and ny != nx:
            k90 = 2 * (k90 % 2)
        theta = math.radians(draws.angle * cfg.max_angle + (90.0 * k90 if cfg.rot90 else 0.0))
        c, s = math.cos(theta), math.sin(theta)
        matrix = np.array([[c, -s], [s, c]]) @ matrix
        matrix[np.abs(matrix) < 1e-12] = 0.0  # exact multiples of 90 degrees
    offset = draws.shift * cfg.shift
    disp = None
    if cfg.elastic and cfg.sigma > 0:
        disp = upsample_field(draws.nodes * np.float32(cfg.sigma), (ny, nx))
    return matrix, offset, disp


def _change_gray_values(image: np.ndarray, cfg: AugmentConfig, draws: _Draws) -> np.ndarray:
    """Gamma, then contrast about the per-channel mean and brightness, on the image only.

    Parameters
    ----------
    image : numpy.ndarray
        The resampled image (a new array: changed in place when it is floating-point).
    cfg : AugmentConfig
        The ranges (``None`` switches one off).
    draws : _Draws
        The sample's random numbers.

    Returns
    -------
    numpy.ndarray
        The changed image (float32 when ``image`` was not floating-point).
    """
    if not np.issubdtype(image.dtype, np.floating):
        image = image.astype(np.float32)
    if cfg.gamma is not None:
        lo, hi = np.log(cfg.gamma)
        g = float(np.exp(lo + draws.gamma_u * (hi - lo)))
        if g != 1.0:
            # sign-preserving power, so values slightly below 0 stay finite
            powered = np.power(np.abs(image), image.dtype.type(g))
            np.copysign(powered, image, out=image)
    # contrast about the per-channel mean and brightness as one affine map
    factor, add = 1.0, np.zeros((1, 1))
    if cfg.contrast is not None:
        factor = cfg.contrast[0] + draws.contrast_u * (cfg.contrast[1] - cfg.contrast[0])
        if factor != 1.0:
            add = (1.0 - factor) * image.mean(axis=(-2, -1), keepdims=True, dtype=np.float64)
    if cfg.brightness is not None:
        add = add + cfg.brightness[0] + draws.bright_u * (cfg.brightness[1] - cfg.brightness[0])
    if factor != 1.0:
        image *= image.dtype.type(factor)
    if np.any(add != 0):
        image += add.astype(image.dtype)
    return image
