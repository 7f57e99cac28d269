"""Training samples: validated, normalised, padded slices with their targets and weights."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inference.inputs import as_image_view
from ..normalize import Normalization
from .border_weights import TargetConfig, training_targets

if TYPE_CHECKING:
    from ..model import UNet


def annotated_slices(labels: np.ndarray, ignore_label: int | None = None) -> list[int]:
    """Slices of a ``(Z, Y, X)`` label stack holding any annotation (``[0]`` for 2D)."""
    lab = np.asarray(labels)
    if lab.ndim == 2:
        return [0] if _has_annotation(lab, ignore_label) else []
    return [z for z in range(lab.shape[0]) if _has_annotation(lab[z], ignore_label)]


def _has_annotation(lab: np.ndarray, ignore_label: int | None) -> bool:
    if ignore_label is None:
        return bool(np.any(lab != 0))
    return bool(np.any((lab != ignore_label) & (lab != 0)))


@dataclass
class Sample:
    """One annotated 2D slice, padded by the halo: what training crops from."""

    image: np.ndarray  # (C, Y+2h, X+2h) normalised, mirrored by the halo
    target: np.ndarray  # (Y+2h, X+2h) int64, 0 outside the image
    weight: np.ndarray  # (Y+2h, X+2h) float32, 0 outside the image and on ignored pixels


def padded_slice(view: Any, z: int, norm: Normalization, halo: int) -> np.ndarray:
    """Slice ``z`` of ``view`` normalised as a whole, ``(C, Y + 2 halo, X + 2 halo)`` mirrored."""
    img = norm(view.slice(z), channel_axis=0)
    mode = "reflect" if min(img.shape[-2:]) > 1 else "symmetric"
    return np.pad(img, ((0, 0), (halo, halo), (halo, halo)), mode=mode)


def pad_to(a: np.ndarray, ny: int, nx: int, mode: str = "symmetric") -> np.ndarray:
    """``a`` (``(..., Y, X)``) padded at the end to at least ``ny`` x ``nx``."""
    ph, pw = max(0, ny - a.shape[-2]), max(0, nx - a.shape[-1])
    if not (ph or pw):
        return a
    return np.pad(a, [(0, 0)] * (a.ndim - 2) + [(0, ph), (0, pw)], mode=mode)


def target_expansion(model: UNet, config: TargetConfig) -> int:
    """Label expansion of the training targets: ``config``'s, else the model's, else 0."""
    if config.expand_labels is not None:
        value = config.expand_labels
    else:
        value = getattr(model, "record", {}).get("expand_labels", 0) or 0
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"expand_labels must be a non-negative integer, got {value!r}")
    return int(value)


def prepare_samples(
    model: UNet, images: Any, labels: Any, config: TargetConfig,
    slices: Sequence[int] | None = None, channel_axis: int | None = None,
    exclude: Mapping[int, tuple[slice, slice]] | None = None,
) -> tuple[list[Sample], list[int]]:
    """Validate inputs and build normalised, padded training samples of the annotated slices.

    ``images`` and ``labels`` are one array each, or two equally long lists of arrays
    (images of different sizes); ``slices`` then index the concatenated slices.
    ``exclude`` maps a slice index to a ``(rows, cols)`` box of it whose pixels get weight
    0: held back from training, e.g. for a round's self-check (:mod:`napari_unet.training.loop`).
    ``config`` says how the targets and weights are made (``TrainConfig.targets``).

    Raises
    ------
    ValueError
        Shape mismatch, no annotated slice, labels with a single class, NaN images or a
        model whose input channels do not match.
    """
    slabs = _slabs(model, images, labels, channel_axis)
    if slices is not None:
        zs = [int(z) for z in slices]
        bad = [z for z in zs if not 0 <= z < len(slabs)]
        if bad:
            raise ValueError(f"slice index {bad[0]} out of range for {len(slabs)} slices")
    else:
        zs = [i for i, (_, _, lab) in enumerate(slabs) if _has_annotation(lab, config.ignore_label)]
    if not zs:
        raise ValueError("no annotated slice: paint labels on at least one slice first")
    samples = _make_samples(model, slabs, zs, config, exclude)
    return samples, zs


def _slabs(model: UNet, images: Any, labels: Any,
           channel_axis: int | None) -> list[tuple[Any, int, np.ndarray]]:
    """Every 2D slice of the images, checked against its labels: ``(view, z, labels)``.

    Parameters
    ----------
    model : UNet
        The model (its input channels).
    images, labels : array-like or list of array-like
        As for :func:`prepare_samples`.
    channel_axis : int, optional
        Channel axis of the images.

    Returns
    -------
    list of tuple
        ``(ImageView, slice index in the view, (Y, X) labels)``, the images' slices in order.
    """
    if isinstance(images, (list, tuple)) != isinstance(labels, (list, tuple)):
        raise ValueError("pass images and labels both as arrays or both as lists")
    pairs = list(zip(images, labels, strict=True)) if isinstance(images, (list, tuple)) \
        else [(images, labels)]
    if not pairs:
        raise ValueError("no images given")
    slabs = []
    for img, lab in pairs:
        view = as_image_view(img, model.in_channels, channel_axis)
        lab = np.asarray(lab)
        expected = (view.n_slices, *view.yx) if view.is_stack else view.yx
        if lab.shape != tuple(expected):
            raise ValueError(f"labels shape {lab.shape} differs from the image's spatial shape "
                             f"{tuple(expected)}")
        if lab.dtype.kind not in "uib":
            raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
        lab3 = lab if view.is_stack else lab[None]
        slabs += [(view, z, lab3[z]) for z in range(view.n_slices)]
    return slabs


def _make_samples(model: UNet, slabs: list[tuple[Any, int, np.ndarray]], zs: list[int],
                  config: TargetConfig, exclude: Mapping[int, tuple[slice, slice]] | None,
                  ) -> list[Sample]:
    """The samples of the slices ``zs`` of ``slabs`` (see :func:`prepare_samples`).

    Raises
    ------
    ValueError
        When the weighted pixels of all samples hold only one class.
    """
    norm = Normalization.from_dict(model.config.normalization)
    h, expand = model.halo, target_expansion(model, config)
    samples, n_fg, n_bg = [], 0, 0
    for i in zs:
        view, z, lab = slabs[i]
        target, weight = training_targets(lab, w0=config.w0, sigma=config.sigma,
                                          class_balance=config.class_balance,
                                          ignore_label=config.ignore_label, expand_labels=expand)
        if exclude and i in exclude:
            weight = np.array(weight, np.float32)
            weight[exclude[i]] = 0
        n_fg += int(((target == 1) & (weight > 0)).sum())
        n_bg += int(((target == 0) & (weight > 0)).sum())
        samples.append(Sample(
            padded_slice(view, z, norm, h),
            np.pad(target.astype(np.int64), h),
            np.pad(weight.astype(np.float32), h),
        ))
    if n_fg == 0 or n_bg == 0:
        raise ValueError("the annotated labels hold only one class: training needs both "
                         "foreground and background pixels")
    return samples


def random_crop(
    s: Sample, size: int, rng: np.random.Generator, tries: int = 10, objects: float = 0.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``size`` x ``size`` crop with some annotated pixels (mirror-padded if too small).

    With probability ``objects`` the crop is centred on a random pixel of a labelled object
    (target > 0 and weight > 0), if there is one; otherwise it is placed uniformly.
    """
    img = pad_to(s.image, size, size)
    tgt, wgt = pad_to(s.target, size, size, "constant"), pad_to(s.weight, size, size, "constant")
    if objects > 0 and rng.random() < objects:
        ys, xs = np.nonzero((tgt > 0) & (wgt > 0))
        if len(ys):
            i = int(rng.integers(len(ys)))
            y = int(np.clip(ys[i] - size // 2, 0, tgt.shape[0] - size))
            x = int(np.clip(xs[i] - size // 2, 0, tgt.shape[1] - size))
            return img[:, y : y + size, x : x + size], tgt[y : y + size, x : x + size], \
                wgt[y : y + size, x : x + size]
    for _ in range(tries):
        y = int(rng.integers(0, tgt.shape[0] - size + 1))
        x = int(rng.integers(0, tgt.shape[1] - size + 1))
        w = wgt[y : y + size, x : x + size]
        if w.any():
            break
    return img[:, y : y + size, x : x + size], tgt[y : y + size, x : x + size], w
