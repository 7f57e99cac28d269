"""Interpret user arrays as stacks of ``(C, Y, X)`` slices, with clear errors.

Arrays are read one slice at a time, so dask and zarr arrays larger than memory work.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass
class ImageView:
    """A read-only view of an image as ``Z`` slices of ``(C, Y, X)``.

    Attributes
    ----------
    data : array-like
        The original array (numpy, dask or zarr), never modified.
    order : tuple of int
        Axis permutation of ``data`` to ``(Z, C, Y, X)`` (missing axes are added).
    is_stack : bool
        Whether the input had a Z axis.
    n_slices : int
        Number of Z slices (1 for 2D input).
    yx : tuple of int
        Spatial shape.
    """

    data: Any
    z_axis: int | None
    c_axis: int | None
    is_stack: bool
    n_slices: int
    yx: tuple[int, int]

    def slice(self, z: int) -> np.ndarray:
        """Return slice ``z`` as a float32 ``(C, Y, X)`` numpy array."""
        index: list[Any] = [slice(None)] * self.data.ndim
        if self.z_axis is not None:
            index[self.z_axis] = z
        arr = np.asarray(self.data[tuple(index)])
        c_axis = self.c_axis
        if c_axis is not None and self.z_axis is not None and self.z_axis < c_axis:
            c_axis -= 1
        arr = arr[None] if c_axis is None else np.moveaxis(arr, c_axis, 0)
        arr = arr.astype(np.float32, copy=False)
        if not np.isfinite(arr).all():
            raise ValueError(f"image slice {z} contains NaN or infinite values")
        return arr

    def sample(self, n: int = 16) -> list[np.ndarray]:
        """Up to ``n`` evenly spaced slices of the whole stack (none for 2D input).

        The same whichever slices are predicted, e.g. for the stack's range floor
        (:func:`napari_unet.normalize.stack_range_floor`).
        """
        if not self.is_stack:
            return []
        zs = np.unique(np.linspace(0, self.n_slices - 1, min(n, self.n_slices)).round())
        return [self.slice(int(z)) for z in zs]

    def check_slices(self, slices: Sequence[int] | None) -> list[int]:
        """Validate a list of slice indices (default: all)."""
        if slices is None:
            return list(range(self.n_slices))
        bad_type = [z for z in slices if isinstance(z, bool) or not isinstance(z, (int, np.integer))]
        if bad_type:
            raise ValueError(f"slice indices must be integers, got {bad_type[0]!r}")
        zs = [int(z) for z in slices]
        if not zs:
            raise ValueError("no slices selected")
        bad = [z for z in zs if not 0 <= z < self.n_slices]
        if bad:
            raise ValueError(f"slice index {bad[0]} out of range for {self.n_slices} slices")
        return zs


def as_image_view(image: Any, in_channels: int = 1, channel_axis: int | None = None) -> ImageView:
    """Interpret ``image`` for a model with ``in_channels`` inputs.

    Parameters
    ----------
    image : array-like
        ``(Y, X)``; ``(Z, Y, X)`` stack (single-channel models); ``(C, Y, X)`` when ``C``
        equals ``in_channels`` > 1; RGB(A) ``(Y, X, 3|4)``; ``(Z, C, Y, X)`` or other 4D
        layouts only with ``channel_axis`` given.
    in_channels : int
        Channels the model expects.
    channel_axis : int, optional
        Channel axis; required for 4D input.

    Returns
    -------
    ImageView
        The view.

    Raises
    ------
    ValueError
        Empty arrays, unsupported dimensionality, NaN in the data (raised when a slice is
        read), or a channel count that does not match the model.
    TypeError
        Non-numeric data.
    """
    image, shape = _numeric_array(image)
    nd = len(shape)
    channel_axis = _checked_channel_axis(shape, channel_axis)
    if nd == 3 and channel_axis is None:
        channel_axis = _guess_3d_channel_axis(shape, in_channels)
    c_axis = channel_axis
    n_ch = shape[c_axis] if c_axis is not None else 1
    if n_ch != in_channels:
        raise ValueError(
            f"the model expects {in_channels} input channel(s) but the image has {n_ch} "
            f"(shape {shape}, channel axis {c_axis})"
        )
    z_axis, yx_axes = _spatial_axes(shape, c_axis)
    n_slices = shape[z_axis] if z_axis is not None else 1
    return ImageView(image, z_axis, c_axis, z_axis is not None, n_slices,
                     (shape[yx_axes[0]], shape[yx_axes[1]]))


def _numeric_array(image: Any) -> tuple[Any, tuple[int, ...]]:
    """Check that ``image`` is a non-empty numeric array.

    Parameters
    ----------
    image : array-like
        The input; objects without ``shape`` and ``dtype`` go through ``np.asarray``.

    Returns
    -------
    tuple
        The array (unchanged when it already was one) and its shape as ints.

    Raises
    ------
    TypeError
        Non-numeric data.
    ValueError
        An empty array or a 0D one.
    """
    if not hasattr(image, "shape") or not hasattr(image, "dtype"):
        image = np.asarray(image)
    shape = tuple(int(s) for s in image.shape)
    if image.dtype.kind not in "uifb":
        raise TypeError(f"image must be numeric, got dtype {image.dtype}")
    if len(shape) == 0 or 0 in shape:
        raise ValueError(f"image is empty (shape {shape})")
    return image, shape


def _checked_channel_axis(shape: tuple[int, ...], channel_axis: int | None) -> int | None:
    """Normalise ``channel_axis`` and check the dimensionality of ``shape``.

    Parameters
    ----------
    shape : tuple of int
        The (non-empty) image shape.
    channel_axis : int, optional
        The channel axis as given, possibly negative.

    Returns
    -------
    int or None
        The channel axis in ``range(len(shape))``, or None.

    Raises
    ------
    ValueError
        4D (or higher) input without a channel axis, or not 2D, 3D or 4D.
    """
    nd = len(shape)
    if channel_axis is not None:
        channel_axis = channel_axis % nd
    if nd >= 4 and channel_axis is None:
        raise ValueError(
            f"{nd}D image of shape {shape}: say which axis holds the channels "
            "(channel_axis=...); only (Z, C, Y, X) style 4D input is supported"
        )
    if nd > 4 or nd < 2:
        raise ValueError(f"expected a 2D, 3D or 4D image, got shape {shape}")
    return channel_axis


def _guess_3d_channel_axis(shape: tuple[int, ...], in_channels: int) -> int | None:
    """Find the channel axis of a 3D image given without one.

    Parameters
    ----------
    shape : tuple of int
        The 3D image shape.
    in_channels : int
        Channels the model expects.

    Returns
    -------
    int or None
        0 or 2 for a multi-channel model whose channel count matches that axis, else
        None (a ``(Z, Y, X)`` stack).

    Raises
    ------
    ValueError
        A multi-channel model and no matching axis, or an RGB(A)-looking image for a
        single-channel model.
    """
    if in_channels > 1 and shape[0] == in_channels:
        return 0
    if in_channels > 1 and shape[-1] == in_channels:
        return 2
    if in_channels > 1:
        raise ValueError(
            f"the model expects {in_channels} channels but the image has shape {shape}"
        )
    if shape[-1] in (3, 4) and min(shape[:2]) > 4:
        raise ValueError(
            f"image of shape {shape} looks like RGB(A) but the model takes 1 channel: "
            "convert it to grayscale, or state the layout (channel_axis=...)"
        )
    return None


def _spatial_axes(shape: tuple[int, ...], c_axis: int | None) -> tuple[int | None, list[int]]:
    """Split the non-channel axes of ``shape`` into an optional Z axis and Y, X.

    Parameters
    ----------
    shape : tuple of int
        The image shape (2D to 4D).
    c_axis : int, optional
        The channel axis, if any.

    Returns
    -------
    tuple
        The Z axis (None for a single slice) and the two spatial axes.

    Raises
    ------
    ValueError
        Not exactly two spatial axes plus at most a Z axis, or spatial axes that are not
        the last two (or the two before a trailing channel axis).
    """
    nd = len(shape)
    spatial = [a for a in range(nd) if a != c_axis]
    if len(spatial) == 3:
        z_axis, yx_axes = spatial[0], spatial[1:]
    elif len(spatial) == 2:
        z_axis, yx_axes = None, spatial
    else:
        raise ValueError(f"cannot find two spatial axes in shape {shape}")
    if yx_axes != [nd - 2, nd - 1] and not (c_axis == nd - 1 and yx_axes == [nd - 3, nd - 2]):
        raise ValueError(f"the spatial axes must be the last two (or before RGB), shape {shape}")
    return z_axis, yx_axes


#: Luminance weights (ITU-R BT.601) for RGB to gray.
_LUMA = np.array([0.299, 0.587, 0.114], np.float32)


def to_model_channels(image: Any, in_channels: int, channel_axis: int | None = None,
                      channel: str | int = "auto") -> tuple[Any, int | None]:
    """Reduce a colour image to the channels a model takes.

    Parameters
    ----------
    image : array-like
        The image; RGB(A) ``(Y, X, 3|4)`` and stacks of them, ``(Z, Y, X, 3|4)``, are
        recognised without ``channel_axis``.
    in_channels : int
        Channels the model expects.
    channel_axis : int, optional
        The channel axis, if any.
    channel : str or int
        ``"auto"``: grayscale when the model takes 1 channel and the image has more,
        else unchanged; ``"gray"``: luminance (RGB) or the mean of the channels; an int:
        that channel only.

    Returns
    -------
    tuple
        The image to predict or train on, and its channel axis (None once reduced).
    """
    nd, shape = len(np.shape(image)), np.shape(image)
    if channel_axis is None and nd in (3, 4) and shape[-1] in (3, 4) \
            and min(shape[-3:-1]) > 4 and in_channels in (1, shape[-1]):
        channel_axis = nd - 1  # RGB(A), one image or a stack of them
    if channel_axis is None:
        return image, None
    axis = channel_axis % nd
    n = np.shape(image)[axis]
    if channel == "auto":
        if in_channels != 1 or n == 1:
            return image, axis
        channel = "gray"
    arr = np.moveaxis(np.asarray(image), axis, -1)
    if isinstance(channel, str):
        if channel != "gray":
            raise ValueError(f"channel must be 'auto', 'gray' or an index, got {channel!r}")
        x = arr[..., :3].astype(np.float32)
        gray = x @ _LUMA if x.shape[-1] == 3 else x.mean(axis=-1)
        return gray, None
    if not 0 <= int(channel) < n:
        raise ValueError(f"channel {channel} is out of range for {n} channels")
    return arr[..., int(channel)], None
