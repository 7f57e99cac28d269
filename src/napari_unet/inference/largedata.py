"""Prediction on arrays larger than memory with ``dask.array.map_overlap``.

Each chunk is read with the network's halo of context from its neighbours (the overlap
depth), predicted with the ordinary overlap-tile code and trimmed, so chunk seams are as
invisible as tile seams. Chunk edges are aligned to the network stride, so the result
equals an in-memory prediction. Results stream chunk by chunk into zarr or TIFF; the same
graph runs unchanged on a ``dask.distributed`` cluster.

Normalisation: per-image percentiles cannot be computed inside one chunk, so the stored
normalisation is evaluated once over the whole array (on a strided subsample) and then
applied as a fixed offset and scale to every chunk.
"""

from __future__ import annotations

import copy
import os
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from ..model import UNet
from ..normalize import Normalization
from ..outputs import atomic_output, check_output, fsync_file, is_zarr_path
from .predict_config import PredictConfig
from .rescale import input_scale

#: Arrays with more elements than this go through the lazy dask path in the CLI.
LARGE_ELEMENTS = 2**28


def is_large(image: Any) -> bool:
    """Whether ``image`` is lazy (dask/zarr) or too big to predict in memory at once."""
    return not isinstance(image, np.ndarray) or image.size > LARGE_ELEMENTS


def global_normalization(model: UNet, image: Any) -> UNet:
    """A copy of ``model`` whose normalisation is fixed from statistics of the whole array."""
    import dask.array as da

    norm = Normalization.from_dict(model.config.normalization)
    fixed = copy.deepcopy(model)
    if norm.mode in ("percentile", "minmax"):
        arr = da.asarray(image)
        step = max(1, int((arr.size / 4e6) ** (1 / arr.ndim)))
        sub = np.asarray(arr[(slice(None, None, step),) * arr.ndim], dtype=np.float32)
        lo, hi = ((np.percentile(sub, norm.low), np.percentile(sub, norm.high))
                  if norm.mode == "percentile" else (sub.min(), sub.max()))
        scale = float(hi - lo) if hi - lo > 1e-6 else 1.0
        # an inverted normalisation, 1 - (x - lo) / s, is (x - hi') / -s with hi' = lo + s
        fixed.config.normalization = (
            {"mode": "fixed", "offset": float(lo) + scale, "scale": -scale} if norm.invert
            else {"mode": "fixed", "offset": float(lo), "scale": scale})
        fixed.config.normalization["smooth"] = norm.smooth
    return fixed


def _predict_block(block: np.ndarray, model: UNet, config: PredictConfig) -> np.ndarray:
    from .predict import predict

    return predict(model, block.astype(np.float32), config)[-1].astype(np.float32)


def _axis_chunks(n: int, edge: int, depth: int) -> tuple[int, ...]:
    """Chunks of ``edge`` px; a remainder thinner than ``depth`` joins the previous chunk.

    dask would otherwise re-chunk it and break the stride alignment of chunk origins.
    """
    k, rem = divmod(n, edge)
    if k == 0:
        return (n,)
    if rem == 0:
        return (edge,) * k
    if rem >= depth:
        return (edge,) * k + (rem,)
    return (edge,) * (k - 1) + (edge + rem,)


def predict_dask(
    model: UNet, image: Any, config: PredictConfig | None = None, *, chunks: int | None = None,
    normalize_globally: bool = True, **options: Any,
) -> Any:
    """Lazy foreground probability of a large ``(Y, X)`` or ``(Z, Y, X)`` single-channel image.

    Parameters
    ----------
    model : UNet
        Single-channel network.
    image : array-like
        numpy, dask or zarr array.
    chunks : int, optional
        Spatial chunk edge (rounded to the network stride). Default: 2048, or the
        existing chunking when it is already aligned.
    config : PredictConfig, optional
        Device, tile, TTA, precision, ... as in :func:`napari_unet.inference.predict.predict_iter`
        (no uncertainty: the result is the foreground probability).
    **options
        Fields of :class:`PredictConfig` (``device="cpu"``, ``tile=256``, ...), which
        override those of ``config``.
    normalize_globally : bool
        Replace per-image normalisation by statistics of the whole array (see module doc).

    Returns
    -------
    dask.array.Array
        float32 foreground probability, same shape as ``image``; nothing is computed yet.
    """
    import dask.array as da

    from ..devices import inference_dtype, resolve_device

    cfg = replace(PredictConfig.merged(config, options), uncertainty=False)
    inference_dtype(resolve_device(cfg.device), cfg.precision)  # bad values fail now, not mid-compute
    if model.in_channels != 1:
        raise ValueError("the large-data path supports single-channel models only")
    arr = da.asarray(image) if not isinstance(image, da.Array) else image
    if arr.ndim not in (2, 3):
        raise ValueError(f"expected (Y, X) or (Z, Y, X), got shape {arr.shape}")
    stride = model.stride
    edge = max(stride, ((chunks or 2048) // stride) * stride)
    halo = int(np.ceil(model.halo / min(1.0, input_scale(model))))  # in the input's pixels
    depth = -(-halo // stride) * stride
    spatial = tuple(_axis_chunks(n, edge, depth) for n in arr.shape[-2:])
    arr = arr.rechunk(((1,) * arr.shape[0],) * (arr.ndim == 3) + spatial)
    if normalize_globally:
        model = global_normalization(model, arr)
    depths = ((0,) if arr.ndim == 3 else ()) + (depth, depth)
    return arr.map_overlap(_predict_block, depth=depths, boundary="none", dtype=np.float32,
                           model=model, config=cfg)


def predict_to_store(
    model: UNet, image: Any, output: str | os.PathLike, config: PredictConfig | None = None, *,
    threshold: float | None = None, chunks: int | None = None, overwrite: bool = True,
    **options: Any,
) -> Path:
    """Predict a large array chunk by chunk straight into zarr or a tiled TIFF.

    The output holds the float32 foreground probability, or a uint8 mask (0/1) when
    ``threshold`` is given. At most one row of chunks is in memory at a time. The result
    streams into a temporary sibling that replaces ``output`` only when complete, so an
    interrupted run keeps the previous output; an output that is the input's own zarr
    store (or lies inside it) is refused, as is an existing one unless ``overwrite``.
    ``config`` and ``options`` are as in :func:`predict_dask`.
    """
    check_output(output, inputs=[_store_path(image)], overwrite=overwrite)
    result = predict_dask(model, image, config, chunks=chunks, **options)
    if threshold is not None:
        result = (result > threshold).astype(np.uint8)
    if is_zarr_path(output):
        with atomic_output(output) as tmp:
            result.to_zarr(str(tmp), overwrite=True)
        return Path(output)
    import tifffile

    tile_edge = 256

    def planes() -> Any:
        for z in range(result.shape[0]) if result.ndim == 3 else [None]:
            yield result[z] if z is not None else result

    def tiles() -> Any:
        # each row of native chunks is computed once; rows carry over into 256 px tile rows
        for plane in planes():
            carry = np.zeros((0, plane.shape[1]), plane.dtype)
            for row in range(plane.numblocks[0]):
                carry = np.concatenate([carry, np.asarray(plane.blocks[row])])
                while carry.shape[0] >= tile_edge or (row == plane.numblocks[0] - 1 and len(carry)):
                    band, carry = carry[:tile_edge], carry[tile_edge:]
                    for x0 in range(0, band.shape[1], tile_edge):
                        t = band[:, x0 : x0 + tile_edge]
                        yield np.pad(t, ((0, tile_edge - t.shape[0]), (0, tile_edge - t.shape[1])))

    with atomic_output(output) as tmp:
        tifffile.imwrite(tmp, tiles(), shape=result.shape, dtype=result.dtype,
                         tile=(tile_edge, tile_edge), compression="zlib")
        fsync_file(tmp)
    return Path(output)


def _store_path(image: Any) -> str | None:
    """The folder of a zarr array's local store, if ``image`` is one (else None)."""
    store = getattr(image, "store", None)
    root = getattr(store, "root", None) or getattr(store, "path", None)
    if root is None:
        return None
    sub = getattr(image, "path", "") or ""
    return str(Path(str(root)) / sub) if sub else str(root)
