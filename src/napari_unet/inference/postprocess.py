"""From class probabilities to instance labels."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np
from scipy import ndimage as ndi
from skimage.measure import label as cc_label
from skimage.morphology import disk, remove_small_objects
from skimage.segmentation import watershed as sk_watershed

from ..model_record import ModelRecord


@dataclass(frozen=True)
class PostprocessConfig:
    """How probabilities become instance labels: the keywords of :func:`labels_from_probabilities`.

    The one list of the tuned post-processing settings and their defaults. A model carries
    its own in ``model.record["postprocess"]`` (a plain dict on disk, :meth:`to_dict`), picked
    by the starter-model script on training images and inherited by fine-tuned versions.
    """

    threshold: float = 0.5
    watershed: bool = False
    min_size: int = 0
    fill: bool = False
    seed_threshold: float | None = None

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> PostprocessConfig:
        """Settings from a stored dict; unknown keys are ignored, missing ones take defaults."""
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in (d or {}).items() if k in names})

    @classmethod
    def for_model(cls, model: Any) -> PostprocessConfig:
        """The settings ``model`` was tuned with (``model.record["postprocess"]``), else defaults."""
        return cls.from_dict(ModelRecord.of(model).postprocess)

    def to_dict(self) -> dict[str, Any]:
        """The settings as keywords of :func:`labels_from_probabilities` (and as stored)."""
        return asdict(self)

    def with_changes(self, **changes: Any) -> PostprocessConfig:
        """A copy with ``changes``; a change that is None keeps the current value.

        (``seed_threshold`` cannot be reset to None this way: use :func:`dataclasses.replace`.)
        """
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    def labels(self, probabilities: np.ndarray, fg_class: int = 1) -> np.ndarray:
        """:func:`labels_from_probabilities` with these settings."""
        return labels_from_probabilities(probabilities, fg_class=fg_class, **self.to_dict())


def postprocess_settings(model: Any) -> dict[str, Any]:
    """Post-processing a model was tuned with, as keywords (:meth:`PostprocessConfig.for_model`)."""
    return PostprocessConfig.for_model(model).to_dict()


def _drop_small(mask: np.ndarray, min_size: int) -> np.ndarray:
    if min_size <= 0:
        return mask
    try:  # scikit-image >= 0.26 removes objects <= max_size
        return remove_small_objects(mask, max_size=min_size - 1)
    except TypeError:  # older releases: objects < min_size
        return remove_small_objects(mask, min_size=min_size)


def _split_at_cores(prob_fg: np.ndarray, lab: np.ndarray, seed_threshold: float,
                    min_size: int) -> np.ndarray:
    """Split components holding several confident cores along the probability valleys."""
    cores = cc_label(_drop_small(prob_fg > seed_threshold, min_size), connectivity=1)
    n = int(cores.max())
    if n == 0:
        return lab
    seeded = np.isin(lab, np.unique(lab[cores > 0]))
    markers = np.where(cores > 0, cores, np.where((lab > 0) & ~seeded, lab + n, 0))
    return sk_watershed(-prob_fg, markers=markers, mask=lab > 0).astype(np.int32)


def _labels_2d(prob_fg: np.ndarray, threshold: float, watershed: bool, min_size: int, grow: int,
               fill: bool, seed_threshold: float | None) -> np.ndarray:
    fg = _drop_small(prob_fg > threshold, min_size)
    lab = cc_label(fg, connectivity=1).astype(np.int32)
    if seed_threshold is not None and seed_threshold > threshold and lab.max() > 0:
        lab = _split_at_cores(prob_fg, lab, seed_threshold, min_size)
    if fill and lab.max() > 0:
        # cells tiling the image: every pixel joins the seed it reaches first over the
        # border ridges, except a one-pixel line (label 0) where two cells meet, so that the
        # 4-connected components of ``labels > 0`` are the cells themselves
        return sk_watershed(-prob_fg, markers=lab, watershed_line=True).astype(np.int32)
    if watershed and lab.max() > 0:
        # closing fills the thin gaps between neighbours but not the outer outlines
        mask = ndi.binary_closing(fg, structure=disk(grow), border_value=0) | fg
        lab = sk_watershed(-prob_fg, markers=lab, mask=mask).astype(np.int32)
    return lab


def labels_from_probabilities(
    probabilities: np.ndarray,
    threshold: float = 0.5,
    fg_class: int = 1,
    watershed: bool = False,
    min_size: int = 0,
    grow: int = 2,
    fill: bool = False,
    seed_threshold: float | None = None,
) -> np.ndarray:
    """Instance labels: 4-connected components of the foreground class.

    Touching objects separated by predicted border (background) pixels come out as
    separate labels. With ``watershed`` the instances are grown back over those border
    pixels by a seeded watershed on the foreground probability, restricted to the gaps that
    a morphological closing with a disk of radius ``grow`` fills (outer outlines stay).
    With ``fill`` the components are seeds of a watershed over the whole image: cells
    that tile the field, as in EM, where the predicted membranes are split between their
    neighbours, which stay apart by a one-pixel line of 0 (so the 4-connected components
    of ``labels > 0`` are the cells, for tools that take a foreground mask). Small seeds
    (``min_size``) are dropped first and their pixels join a neighbour. With
    ``seed_threshold`` a component that holds several confident cores (components above
    ``seed_threshold``, at least ``min_size`` pixels) is split between them along the
    probability valley: touching nuclei joined by a bridge of middling probability.

    Parameters
    ----------
    probabilities : numpy.ndarray
        ``(K, Y, X)`` or ``(K, Z, Y, X)`` softmax output.
    threshold : float
        Foreground probability threshold.
    fg_class : int
        Index of the foreground class.
    watershed : bool
        Grow instances over the thin predicted borders.
    min_size : int
        Remove foreground components smaller than this many pixels.
    grow : int
        Maximal growth in pixels for ``watershed``.
    fill : bool
        Grow the components over every background pixel (overrides ``watershed``).
    seed_threshold : float, optional
        Split components at their cores above this probability (ignored unless it
        exceeds ``threshold``).

    Returns
    -------
    numpy.ndarray
        int32 labels of the spatial shape; for stacks each slice is labelled separately
        with ids unique across the stack.
    """
    fg = _foreground(probabilities, fg_class)
    settings = (threshold, watershed, min_size, grow, fill, seed_threshold)
    return _labels_2d(fg, *settings) if fg.ndim == 2 else _labels_stack(fg, settings)


def _labels_stack(fg: np.ndarray, settings: tuple[Any, ...]) -> np.ndarray:
    """Label each slice of a ``(Z, Y, X)`` foreground probability, ids unique across slices.

    ``settings`` are the arguments of ``_labels_2d`` after the probability.
    """
    out = np.zeros(fg.shape, np.int32)
    offset = 0
    for z in range(fg.shape[0]):
        lab = _labels_2d(fg[z], *settings)
        out[z] = np.where(lab > 0, lab + offset, 0)
        offset = max(offset, int(out[z].max()))
    return out


def _foreground(probabilities: np.ndarray, fg_class: int) -> np.ndarray:
    """The foreground probability ``(Y, X)`` or ``(Z, Y, X)`` of a ``(K, ...)`` softmax output.

    Raises
    ------
    ValueError
        Unless ``probabilities`` is ``(K, Y, X)`` or ``(K, Z, Y, X)`` with ``fg_class < K``.
    """
    p = np.asarray(probabilities)
    if p.ndim not in (3, 4):
        raise ValueError(f"probabilities must be (K, Y, X) or (K, Z, Y, X), got {p.shape}")
    if not 0 <= fg_class < p.shape[0]:
        raise ValueError(f"fg_class {fg_class} out of range for {p.shape[0]} classes")
    return p[fg_class]
