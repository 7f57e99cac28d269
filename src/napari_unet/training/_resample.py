"""Resampling helpers of :mod:`napari_unet.training.augment` (private; NumPy/torch, no Qt).

Bicubic upsampling of coarse displacement grids, composition of the affine map and the
elastic field into per-pixel source coordinates, mirroring at the borders, and one-pass
resampling with torch's ``grid_sample`` (image and weights) and a nearest-neighbour gather
(labels).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

_GRID_SAMPLE = {"padding_mode": "reflection", "align_corners": True}


def _cubic(x: np.ndarray) -> np.ndarray:
    """Keys cubic convolution kernel with ``a = -0.75`` (torch's bicubic)."""
    a = -0.75
    x = np.abs(x)
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return np.where(x <= 1, near, np.where(x < 2, far, 0.0))


@lru_cache(maxsize=64)
def _bicubic_matrix(n: int, g: int) -> np.ndarray:
    """Matrix ``M`` (n, g) so that ``M @ v`` upsamples ``v`` (g,) to n points bicubically.

    Matches ``F.interpolate(mode="bicubic", align_corners=True)``: node ``j`` sits on
    pixel ``j * (n - 1) / (g - 1)``, out-of-range taps are clamped to the edge nodes.
    """
    m = np.zeros((n, g), dtype=np.float64)
    s = np.arange(n) * ((g - 1) / (n - 1)) if n > 1 else np.zeros(1)
    i0 = np.floor(s).astype(np.intp)
    t = s - i0
    rows = np.arange(n)
    for k in (-1, 0, 1, 2):
        idx = np.clip(i0 + k, 0, g - 1)
        np.add.at(m, (rows, idx), _cubic(t - k))
    return m.astype(np.float32)


def _mirror(c: np.ndarray, n: int) -> np.ndarray:
    """Fold coordinates into ``[0, n - 1]`` by mirroring about the border pixels (in place)."""
    if n == 1:
        c.fill(0.0)
        return c
    lo, hi = c.min(), c.max()
    if lo >= 0 and hi <= n - 1:
        return c
    period = 2.0 * (n - 1)
    np.abs(c, out=c)
    if hi > period or -lo > period:
        np.fmod(c, period, out=c)
    np.minimum(c, period - c, out=c)
    return c


def _float_dtype(a: np.ndarray) -> np.dtype:
    return a.dtype if np.issubdtype(a.dtype, np.floating) else np.dtype(np.float32)


def upsample_field(nodes: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bicubically upsample grid displacements ``(2, g, g)`` to a field ``(2, Y, X)``."""
    my = _bicubic_matrix(int(shape[0]), nodes.shape[1])
    mx = _bicubic_matrix(int(shape[1]), nodes.shape[2])
    with torch.no_grad():  # torch's small-inner-dimension matmul is much faster here
        field = torch.from_numpy(my) @ torch.from_numpy(nodes) @ torch.from_numpy(mx).T
    return field.numpy()


def source_coordinates(
    shape: tuple[int, int], matrix: np.ndarray, offset: np.ndarray, disp: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray]:
    """Source coordinates ``c + matrix @ (p - c) + offset + disp(p)`` for output pixels p."""
    ny, nx = shape
    cy, cx = (ny - 1) / 2.0, (nx - 1) / 2.0
    py = (np.arange(ny, dtype=np.float32) - np.float32(cy))[:, None]
    px = (np.arange(nx, dtype=np.float32) - np.float32(cx))[None, :]
    coords = []
    for row, center, off in ((0, cy, offset[0]), (1, cx, offset[1])):
        a, b = np.float32(matrix[row, 0]), np.float32(matrix[row, 1])
        base_y = a * py + np.float32(center + off)  # (ny, 1)
        if disp is None:
            c = base_y + b * px
        else:
            c = disp[row]  # ours: updated in place
            c += base_y
            c += b * px
        coords.append(c)
    return coords[0], coords[1]


def _sample(parts: list[np.ndarray], grid: torch.Tensor, mode: str) -> np.ndarray:
    """``grid_sample`` the stacked (C, Y, X) arrays at ``grid``; returns float32 (C, Y, X)."""
    inp = parts[0] if len(parts) == 1 else np.concatenate(parts, axis=0, dtype=np.float32)
    inp = np.ascontiguousarray(inp, dtype=np.float32)
    if not inp.flags.writeable:  # torch.from_numpy warns on read-only arrays
        inp = inp.copy()
    with torch.no_grad():
        return F.grid_sample(torch.from_numpy(inp)[None], grid, mode=mode, **_GRID_SAMPLE)[
            0
        ].numpy()


def warp(
    image: np.ndarray,
    labels: np.ndarray,
    weights: np.ndarray | None,
    ys: np.ndarray,
    xs: np.ndarray,
    image_order: int = 1,
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Sample image, labels and weights at the source coordinates ``(ys, xs)``."""
    ny, nx = labels.shape
    ys = _mirror(ys, ny)
    xs = _mirror(xs, nx)

    # image channels (and weights) in one grid_sample call per interpolation order
    grid = np.empty((1, ny, nx, 2), dtype=np.float32)
    for axis, (c, n) in enumerate(((xs, nx), (ys, ny))):  # pixel 0 -> -1, n - 1 -> +1
        np.multiply(c, np.float32(2.0 / (n - 1) if n > 1 else 0.0), out=grid[0, :, :, axis])
        grid[0, :, :, axis] -= np.float32(n > 1)
    grid_t = torch.from_numpy(grid)

    n_img = int(np.prod(image.shape[:-2], dtype=np.intp))
    parts = [image.reshape(n_img, ny, nx)]
    if weights is not None and image_order == 1:
        parts.append(weights[None])  # same interpolation: one call for both
    out = _sample(parts, grid_t, "bilinear" if image_order == 1 else "bicubic")
    weights_out = None
    if weights is not None:
        w = out[n_img] if image_order == 1 else _sample([weights[None]], grid_t, "bilinear")[0]
        weights_out = w.astype(_float_dtype(weights), copy=False)
    image_out = out[:n_img].reshape(image.shape).astype(_float_dtype(image), copy=False)

    # labels: nearest neighbour, gathered directly (exact for any integer dtype); the
    # flat index is built in place in ys (float32 counts pixels exactly up to 2**24)
    flat = ys if ny * nx < 2**24 else ys.astype(np.float64)
    np.rint(flat, out=flat)
    flat *= nx
    flat += np.rint(xs, out=xs)
    labels_out = labels.ravel().take(flat.astype(np.intp)).reshape(ny, nx)
    return image_out, labels_out, weights_out
