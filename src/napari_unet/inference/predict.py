"""Overlap-tile prediction: a generator that yields progress and returns probabilities.

``predict_iter`` is the one implementation; the CLI (tqdm), the napari widgets
(``thread_worker``) and the tests all drive it. Stopping the iteration cancels.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from .. import devices
from ..jobs import fraction_done, run
from ..model import UNet
from ..model_record import ModelRecord
from ..normalize import Normalization, stack_range_floor
from .cpu_pool import cpu_workers, tile_pool
from .inputs import ImageView, as_image_view
from .predict_config import PredictConfig
from .rescale import at_scale, input_scale, is_unit, resample, scaled_shape
from .tiling import AxisPlan, choose_tile, crop_offset, memory_per_tile, pad_image, plan_axis
from .tta import DIHEDRAL, forward_tta, softmax_entropy

CPU_BUDGET = 3 * 2**30
CPU_MAX_TILE = 860  # beyond ~800 px, tiles fall out of cache: 4x4 700-px tiles beat 3x3 876-px ones
# on a 2048² image by 7-10 % (fp32, 2 cores; benchmarks/bench_predict.py)
GPU_BUDGET_FRACTION = 0.5

@dataclass
class Progress:
    """A progress event: ``done`` of ``total`` tiles, on slice ``z`` (a :class:`~napari_unet.jobs.Event`)."""

    done: int
    total: int
    z: int
    elapsed: float

    @property
    def message(self) -> str:
        """``"slice 2: tile 3/16, 1 s"``."""
        return f"slice {self.z}: tile {self.done}/{self.total}, {self.elapsed:.0f} s"

    @property
    def fraction(self) -> float | None:
        """Tiles done of all (None without a count)."""
        return fraction_done(self.done, self.total)


@dataclass
class PredictionResult:
    """Result of :func:`predict_iter`.

    Attributes
    ----------
    probabilities : numpy.ndarray
        float32 ``(K, *spatial)``: per-class softmax, spatial shape as the input
        (``(Y, X)`` or ``(Z, Y, X)``). Slices that were not predicted are 0.
    uncertainty : numpy.ndarray or None
        float32 ``spatial``: per-pixel softmax entropy (nats), or with TTA the standard
        deviation of the foreground probability across the 8 transforms.
    slices : list of int
        The slices that were predicted.
    device : str
        The device used.
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"fp16"``: what the network ran in.
    """

    probabilities: np.ndarray
    uncertainty: np.ndarray | None
    slices: list[int]
    device: str
    precision: str = "fp32"


def _tile_batches(plans: tuple[AxisPlan, AxisPlan], batch: int) -> list[list[tuple[int, int]]]:
    idx = [(i, j) for i in range(len(plans[0].starts)) for j in range(len(plans[1].starts))]
    return [idx[k : k + batch] for k in range(0, len(idx), batch)]


def predict_slice_iter(
    model: UNet,
    image: np.ndarray,
    *,
    device: torch.device,
    tile: int | None = None,
    batch_size: int | None = None,
    tta: bool = False,
    padding_mode: str = "reflect",
    memory_budget: int | None = None,
    dtype: torch.dtype | None = None,
) -> Generator[tuple[int, int], None, tuple[np.ndarray, np.ndarray | None]]:
    """Predict one normalised ``(C, Y, X)`` image tile by tile.

    ``dtype`` is the reduced precision (None: fp32): autocast on GPUs; on CPUs ``model``
    must already be in that dtype (see :func:`_inference_model`).
    Yields ``(tiles_done, tiles_total)`` after each batch and returns
    ``(probabilities (K, Y, X), tta_spread (Y, X) or None)``.
    """
    _, h, w = image.shape
    budget = memory_budget or _default_budget(device)
    plans = _plans(model, (h, w), tile, budget, device)
    per_tile = max(1, _tile_bytes(model, plans))
    batch = batch_size or max(1, min(1 if device.type == "cpu" else 16, budget // per_tile))
    padded = pad_image(image, plans, padding_mode)
    probs = np.zeros((model.n_classes, h, w), np.float32)
    spread = np.zeros((h, w), np.float32) if tta else None
    off = crop_offset(model)
    (ty, tx) = (plans[0].in_tile, plans[1].in_tile)
    batches = _tile_batches(plans, batch)
    total = sum(len(b) for b in batches)

    def run_batch(chunk: list[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray | None]:
        tiles = np.stack(
            [padded[:, plans[0].starts[i] : plans[0].starts[i] + ty,
                     plans[1].starts[j] : plans[1].starts[j] + tx] for i, j in chunk]
        )
        x = torch.from_numpy(tiles).to(device).contiguous(memory_format=torch.channels_last)
        if device.type == "cpu" and dtype is not None:
            x = x.to(dtype)
        with torch.inference_mode(), devices.autocast(device, dtype is not None, dtype):
            p, s = forward_tta(model, x, tta, tta_pool)
        return p.cpu().numpy(), (s.cpu().numpy() if s is not None else None)

    # CPU: tiles side by side, one core each; a single tile with TTA: its 8 transforms
    workers = cpu_workers(device, len(batches), budget, per_tile * batch)
    tta_workers = cpu_workers(device, len(DIHEDRAL), budget, per_tile * batch) if tta else 1
    tta_pool = tile_pool(tta_workers) if workers == 1 and tta_workers > 1 else None
    # in order; closing the iterator (cancel) drops the batches not yet started
    results = tile_pool(workers).map(run_batch, batches) if workers > 1 else map(run_batch, batches)
    done = 0
    try:
        for chunk, (p, s) in zip(batches, results, strict=True):
            _paste_batch(probs, spread, p, s, chunk, plans, off)
            done += len(chunk)
            yield done, total
    finally:
        if hasattr(results, "close"):
            results.close()
    return probs, spread


def _paste_batch(
    probs: np.ndarray, spread: np.ndarray | None, p: np.ndarray, s: np.ndarray | None,
    chunk: list[tuple[int, int]], plans: tuple[AxisPlan, AxisPlan], off: int,
) -> None:
    """Copy the kept centre of each tile of ``chunk`` into ``probs`` (and ``spread``).

    ``p`` (``(N, K, ty', tx')``) and ``s`` (``(N, ty', tx')`` or None) are the network
    outputs of the batch; ``off`` is where the useful output starts (:func:`crop_offset`).
    """
    for n, (i, j) in enumerate(chunk):
        (y0, y1), (x0, x1) = plans[0].keep(i), plans[1].keep(j)
        sy, sx = off + y0 - plans[0].starts[i], off + x0 - plans[1].starts[j]
        probs[:, y0:y1, x0:x1] = p[n, :, sy : sy + y1 - y0, sx : sx + x1 - x0]
        if spread is not None and s is not None:
            spread[y0:y1, x0:x1] = s[n, sy : sy + y1 - y0, sx : sx + x1 - x0]


def _plans(
    model: UNet, yx: tuple[int, int], tile: int | None, budget: int, device: torch.device
) -> tuple[AxisPlan, AxisPlan]:
    in_tile = tile or choose_tile(model, yx, budget, _max_tile(device))
    return plan_axis(model, yx[0], in_tile), plan_axis(model, yx[1], in_tile)


def _slice_workers(
    model: UNet, yx: tuple[int, int], n_slices: int, device: torch.device, tile: int | None,
    tta: bool, memory_budget: int | None,
) -> int:
    """CPU stacks whose slices are one tile each (no TTA): how many slices run side by side."""
    if device.type != "cpu" or tta or n_slices < 2:
        return 1
    budget = memory_budget or _default_budget(device)
    plans = _plans(model, yx, tile, budget, device)
    if len(plans[0].starts) * len(plans[1].starts) > 1:
        return 1  # the tiles of each slice run side by side instead
    return cpu_workers(device, n_slices, budget, _tile_bytes(model, plans))


def _inference_model(model: UNet, device: torch.device, dtype: torch.dtype | None) -> UNet:
    """``model`` on ``device`` in eval mode and channels_last; a reduced-precision copy on CPUs.

    GPUs use autocast instead; the caller's model is never converted to another dtype.
    """
    model = devices.prepare_for_inference(model, device)
    if device.type == "cpu" and dtype is not None:
        model = copy.deepcopy(model).to(dtype)
    return model


def _max_tile(device: torch.device) -> int | None:
    return CPU_MAX_TILE if device.type == "cpu" else None


def _tile_bytes(model: UNet, plans: tuple[AxisPlan, AxisPlan]) -> int:
    return memory_per_tile(model, max(plans[0].in_tile, plans[1].in_tile))


def _default_budget(device: torch.device) -> int:
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * GPU_BUDGET_FRACTION)
    return CPU_BUDGET


def recommended_tta(model: UNet) -> bool:
    """Whether ``model`` is meant to be used with test-time augmentation.

    Set by the starter-model script (``model.record["predict"]["tta"]``) where averaging the
    8 flips/rotations pays for its 8x cost (the EM model: fewer membrane gaps); fine-tuned
    versions inherit it. False for models without a record.
    """
    return bool((ModelRecord.of(model).predict or {}).get("tta", False))


def predict_iter(
    model: UNet,
    image: np.ndarray,
    config: PredictConfig | None = None,
    *,
    channel_axis: int | None = None,
    slices: Sequence[int] | None = None,
    **options: Any,
) -> Generator[Progress, None, PredictionResult]:
    """Predict class probabilities with the overlap-tile strategy, yielding progress.

    Parameters
    ----------
    model : UNet
        The network (its stored normalisation is applied to every slice).
    image : array-like
        ``(Y, X)``, ``(Z, Y, X)``, ``(C, Y, X)``, RGB ``(Y, X, 3)`` or ``(Z, C, Y, X)``;
        numpy, dask or zarr; uint8, uint16 or float. See :func:`napari_unet.inference.inputs.as_image_view`.
    config : PredictConfig, optional
        Device, tile, batch size, TTA, uncertainty, padding, memory budget and precision.
    channel_axis : int, optional
        The channel axis; required for 4D input.
    slices : sequence of int, optional
        For stacks, predict only these slices (default: all).
    **options
        Fields of :class:`PredictConfig` (``device="cpu"``, ``tta=True``, ...), which
        override those of ``config``.

    Yields
    ------
    Progress
        After each batch of tiles.

    Returns
    -------
    PredictionResult
        Probabilities (and uncertainty) shaped like the input's spatial axes.
    """
    cfg = PredictConfig.merged(config, options)
    if getattr(model, "is_bioimageio_runtime", False):  # a foreign bioimage.io model
        return (yield from model.predict_iter(image, channel_axis=channel_axis, slices=slices,
                                              device=cfg.device, uncertainty=cfg.uncertainty))
    view = as_image_view(image, model.in_channels, channel_axis)
    zs = view.check_slices(slices)
    job = _SliceJob.start(model, view, cfg)
    workers = _slice_workers(job.model, job.net_yx, len(zs), job.device, cfg.tile, job.tta,
                             cfg.memory_budget)
    if workers > 1:  # CPU, one tile per slice: slices side by side, one core each
        yield from job.side_by_side(zs, workers)
    else:
        yield from job.in_turn(zs)
    probs, unc = job.probs, job.unc
    if not view.is_stack:
        probs, unc = probs[:, 0], (unc[0] if unc is not None else None)
    return PredictionResult(probs, unc, zs, str(job.device), devices.precision_name(job.dtype))


@dataclass
class _SliceJob:
    """The slices of one :func:`predict_iter` call and the arrays they fill."""

    model: UNet
    view: ImageView
    cfg: PredictConfig
    device: torch.device
    dtype: torch.dtype | None
    tta: bool
    norm: Normalization
    probs: np.ndarray
    unc: np.ndarray | None
    t0: float
    floor: np.ndarray

    @classmethod
    def start(cls, model: UNet, view: ImageView, cfg: PredictConfig) -> _SliceJob:
        dev = devices.resolve_device(cfg.device)
        dtype = devices.inference_dtype(dev, cfg.precision)
        model = _inference_model(model, dev, dtype)
        probs = np.zeros((model.n_classes, view.n_slices, *view.yx), np.float32)
        unc = np.zeros((view.n_slices, *view.yx), np.float32) if cfg.uncertainty else None
        tta = recommended_tta(model) if cfg.tta is None else bool(cfg.tta)
        norm = Normalization.from_dict(model.config.normalization)
        return cls(model, view, cfg, dev, dtype, tta, norm, probs, unc, time.perf_counter(),
                   stack_range_floor(norm, view.sample(), cfg.stack_floor))

    @property
    def net_yx(self) -> tuple[int, int]:
        """The slice size the network sees (the input's, resampled by the input scale)."""
        scale = input_scale(self.model)
        return self.view.yx if is_unit(scale) else scaled_shape(self.view.yx, scale)

    def progress(self, done: int, total: int, z: int) -> Progress:
        return Progress(done, total, z, time.perf_counter() - self.t0)

    def store(self, z: int, p: np.ndarray, spread: np.ndarray | None) -> None:
        self.probs[:, z] = p
        if self.unc is not None:
            self.unc[z] = spread if spread is not None else softmax_entropy(p)

    def one_slice(self, z: int, tile: int | None, batch: int | None) -> Generator:
        unit = is_unit(input_scale(self.model))
        x = self.norm(self.view.slice(z), channel_axis=0, min_range=self.floor, smooth=unit)
        if not unit:  # the network sees objects at the size it learned, smoothed there
            x = self.norm.smoothed(resample(x, self.net_yx), channel_axis=0)
        gen = predict_slice_iter(
            self.model, x, device=self.device, tile=tile, batch_size=batch, tta=self.tta,
            padding_mode=self.cfg.padding_mode, memory_budget=self.cfg.memory_budget,
            dtype=self.dtype)
        return gen if unit else at_scale(gen, self.view.yx)

    def in_turn(self, zs: list[int]) -> Generator[Progress, None, None]:
        """Slice after slice, tiles counted over the stack; smaller tiles after out-of-memory."""
        done_before, total_guess = 0, None
        for z in zs:
            cur_tile, cur_batch = self.cfg.tile, self.cfg.batch_size
            while True:
                gen = self.one_slice(z, cur_tile, cur_batch)
                try:
                    while True:
                        done, total = next(gen)
                        total_guess = total_guess or total * len(zs)
                        yield self.progress(done_before + done, total_guess, z)
                except StopIteration as stop:
                    p, spread = stop.value
                    break
                except Exception as err:  # noqa: BLE001 - narrowed by is_oom below
                    if not devices.is_oom(err):
                        raise
                    devices.empty_cache(self.device)
                    cur_tile, cur_batch = _shrink(self.model, self.net_yx, cur_tile, cur_batch,
                                                  self.device, err)
            done_before += total
            self.store(z, p, spread)

    def side_by_side(self, zs: list[int], workers: int) -> Generator[Progress, None, None]:
        """One slice per core (CPU, one tile per slice); cancelling drops those not started."""
        tile, batch = self.cfg.tile, self.cfg.batch_size
        results = tile_pool(workers).map(lambda z: run(self.one_slice(z, tile, batch)), zs)
        try:
            for k, (z, (p, spread)) in enumerate(zip(zs, results, strict=True)):
                self.store(z, p, spread)
                yield self.progress(k + 1, len(zs), z)
        finally:
            results.close()


def _shrink(
    model: UNet, shape: tuple[int, ...], tile: int | None, batch: int | None,
    dev: torch.device, err: BaseException,
) -> tuple[int, int]:
    """Smaller batch, then smaller tile, after an out-of-memory error; give up clearly."""
    if batch is None or batch > 1:
        first = tile or choose_tile(model, tuple(shape), _default_budget(dev), _max_tile(dev))
        return first, max(1, (batch or 2) // 2)
    smallest = model.valid_input_size(2 * model.halo + model.stride)
    current = tile or choose_tile(model, tuple(shape), _default_budget(dev), _max_tile(dev))
    if current <= smallest:
        raise MemoryError(
            f"out of memory on {dev} even with one {current}px tile; use device='cpu' "
            f"or a smaller model ({err})"
        ) from err
    return model.valid_input_size(max(smallest, current // 2)), 1


def predict(model: UNet, image: np.ndarray, config: PredictConfig | None = None,
            **kwargs: Any) -> np.ndarray:
    """Blocking form of :func:`predict_iter`; returns the probabilities only."""
    return run(predict_iter(model, image, config, **kwargs)).probabilities  # type: ignore[union-attr]


__all__ = ["ImageView", "PredictConfig", "Progress", "PredictionResult", "predict", "predict_iter",
           "recommended_tta"]
