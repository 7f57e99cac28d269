"""Overlap-tile geometry (Ronneberger et al. 2015, Fig. 2).

Output tiles cover the image exactly; each input tile is its output tile plus the
network's halo on every side. Missing context at the image border is filled by mirroring
(or zeros). Tile origins are multiples of the network's total stride ``2**(depth-1)``, so
every 2x2 pooling sees the same pixel grid as in one pass over the whole image: tiled and
whole-image predictions agree to float precision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..model import UNet


@dataclass(frozen=True)
class AxisPlan:
    """Tiling of one spatial axis.

    Attributes
    ----------
    length : int
        Image length along the axis.
    in_tile : int
        Input tile length fed to the network (a valid input size).
    out_tile : int
        Useful output length of one tile.
    step : int
        Distance between tile origins (a multiple of the network stride, <= ``out_tile``).
    starts : tuple of int
        Origins of the output tiles in image coordinates.
    pad_before, pad_after : int
        Padding applied to the image so every input tile lies inside it.
    """

    length: int
    in_tile: int
    out_tile: int
    step: int
    starts: tuple[int, ...]
    pad_before: int
    pad_after: int

    def keep(self, i: int) -> tuple[int, int]:
        """Image interval ``[a, b)`` written by tile ``i`` (tiles never write twice)."""
        a = self.starts[i]
        b = self.starts[i + 1] if i + 1 < len(self.starts) else self.length
        return a, b


def plan_axis(model: UNet, length: int, in_tile: int) -> AxisPlan:
    """Plan the tiles along one axis of ``length`` pixels with input tiles of ``in_tile``.

    The tile is shrunk when a smaller one already covers the whole axis.
    """
    if length < 1:
        raise ValueError("cannot tile an empty axis")
    halo, stride = model.halo, model.stride
    in_tile = model.valid_input_size(min(in_tile, model.valid_input_size(length + 2 * halo)))
    out = useful_output(model, in_tile)
    if out < stride:
        in_tile = input_for_useful(model, stride)
        out = useful_output(model, in_tile)
    step = max(stride, (out // stride) * stride)
    n_tiles = 1 if out >= length else 1 + -(-(length - out) // step)
    # the smallest tile that still needs no more tiles wastes the least work at the far edge
    while in_tile > stride:
        smaller = in_tile - stride
        try:
            s_out = useful_output(model, smaller)
        except ValueError:
            break
        s_step = (s_out // stride) * stride
        if s_step < stride or (1 if s_out >= length else 1 + -(-(length - s_out) // s_step)) > n_tiles:
            break
        in_tile, out, step = smaller, s_out, s_step
    starts = tuple(i * step for i in range(n_tiles))
    pad_after = starts[-1] + in_tile - halo - length
    return AxisPlan(length, in_tile, out, step, starts, halo, pad_after)


def useful_output(model: UNet, in_tile: int) -> int:
    """Useful output length of an input tile: the network output minus any padded margin."""
    if model.config.padding == "valid":
        return model.output_size(in_tile)
    return in_tile - 2 * model.halo


def input_for_useful(model: UNet, out: int) -> int:
    """Smallest valid input tile whose useful output is at least ``out`` pixels."""
    return model.valid_input_size(out + 2 * model.halo)


def crop_offset(model: UNet) -> int:
    """Offset of the useful output inside the network output (0 unpadded, halo padded)."""
    return 0 if model.config.padding == "valid" else model.halo


def pad_image(
    image: np.ndarray, plans: tuple[AxisPlan, AxisPlan], mode: str = "reflect"
) -> np.ndarray:
    """Pad the last two axes of ``image`` for ``plans`` by mirroring (or zeros).

    Parameters
    ----------
    image : numpy.ndarray
        ``(..., Y, X)``.
    plans : tuple of AxisPlan
        Plans for Y and X.
    mode : str
        ``"reflect"`` (mirror, the paper) or ``"constant"`` (zeros).

    Returns
    -------
    numpy.ndarray
        The padded image.
    """
    if mode not in ("reflect", "constant"):
        raise ValueError(f"padding mode must be 'reflect' or 'constant', got {mode!r}")
    widths = [(0, 0)] * (image.ndim - 2) + [(p.pad_before, p.pad_after) for p in plans]
    if mode == "reflect" and min(image.shape[-2:]) < 2:
        mode = "symmetric"  # reflect needs at least 2 pixels
    return np.pad(image, widths, mode=mode)


def memory_per_tile(model: UNet, in_tile: int, bytes_per_value: int = 4) -> int:
    """Rough peak activation memory (bytes) of one ``in_tile`` x ``in_tile`` tile at inference."""
    c = model.config
    total = 0
    size = in_tile
    for level in range(c.depth):
        ch = c.base_channels * 2**level
        total += 3 * ch * size * size  # skip + two conv outputs alive at once
        size //= 2
    total += c.base_channels * 2 * in_tile * in_tile  # concatenation at the top level
    return int(total * bytes_per_value * 1.3)


def choose_tile(
    model: UNet, shape: tuple[int, int], budget_bytes: int, max_tile: int | None = None
) -> int:
    """Largest input tile whose activations fit in ``budget_bytes`` without exceeding the image.

    ``max_tile`` caps it: on CPUs, tiles beyond ~800 px fall out of cache and run slower
    per pixel (measured in ``benchmarks/bench_predict.py``).
    """
    stride = model.stride
    biggest = model.valid_input_size(max(shape) + 2 * model.halo)
    if max_tile is not None:
        biggest = min(biggest, max(max_tile, input_for_useful(model, stride)))
    best = input_for_useful(model, stride)
    size = best
    while size <= biggest:
        if memory_per_tile(model, size) > budget_bytes:
            break
        best = size
        size = model.valid_input_size(size + stride)
    return best
