"""Border weight map of the U-Net paper (Ronneberger et al. 2015, Eq. 2), NumPy/SciPy only.

``w = w_c + w0 exp(-(d1 + d2)**2 / (2 sigma**2))``, ``d1``/``d2``: Euclidean distances (pixel
centres) to the nearest and second-nearest instance. Labels: 0 background, > 0 instances,
``ignore_label`` unannotated (never an instance). Integer-valued floats are accepted; other
floats, NaN/inf, negatives (but ``ignore_label``), complex/object/str raise. Only 0/1 (or bool):
a binary mask, split into 8-connected components. 3D: a (Z, Y, X) stack, done slice by slice.

Distances (``d1``, ``d2``, :func:`border_distances`, :func:`cutoff_distance`) are computed in
:mod:`napari_unet.training._distances` and re-exported here.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from ._distances import EXACT_WINDOW as EXACT_WINDOW
from ._distances import TOLERANCE as TOLERANCE
from ._distances import border_distances, cutoff_distance, distance_blocks, pad_columns, prepare_labels

__all__ = ["border_distances", "border_weight_map", "cutoff_distance", "separation_borders",
           "training_targets"]

#: Threads for the border term of images with >= 2**20 pixels (vertical strips with a halo).
THREADS = max(1, min(2, os.cpu_count() or 1))
_THREAD_MIN_PIXELS = 1 << 20


def _filter3(a: np.ndarray, width: int, op: np.ufunc) -> np.ndarray:
    """3x3 grey dilation/erosion (``op``) of a flattened padded image (neutral padding)."""
    t = a.copy()
    op(t[:-1], a[1:], out=t[:-1])
    op(t[1:], a[:-1], out=t[1:])
    out = t.copy()
    op(out[:-width], t[width:], out=out[:-width])
    op(out[width:], t[:-width], out=out[width:])
    return out


def _border_mask(lab_p: np.ndarray) -> np.ndarray:
    """Instance pixels where 3x3 dilation or erosion-over-instances differs (padded 2D)."""
    flat, width = lab_p.reshape(-1), lab_p.shape[1]
    shifted = (flat - 1).view(f"u{flat.dtype.itemsize}")
    border = _filter3(flat, width, np.maximum) != flat
    border |= _filter3(shifted, width, np.minimum) != shifted
    border &= flat > 0
    return border.reshape(lab_p.shape)


def separation_borders(labels: np.ndarray, *, ignore_label: int | None = None) -> np.ndarray:
    """Make pixels where two different instances touch background.

    A pixel of instance ``a`` becomes 0 when its 3x3 neighbourhood holds another instance
    (3x3 grey dilation or erosion over instances differs from ``a``). Both sides of a contact
    go, so the result does not depend on the numbering; instances end up >= 1 px apart (2 px
    across a straight contact), no longer 8-connected. Stacks: per slice.

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels, 2D or (Z, Y, X). A binary mask is returned unchanged.
    ignore_label : int, optional
        Unannotated pixels: never instances, left unchanged.

    Returns
    -------
    numpy.ndarray
        A new array, dtype and shape of ``labels`` (the input is not modified).
    """
    arr, lab, _ = prepare_labels(labels, ignore_label, relabel=False)
    out = arr.copy()
    for z, sl in enumerate(lab.reshape((-1,) + lab.shape[-2:])):
        border = _border_mask(pad_columns(sl, 1))[:, :-1]
        out.reshape((-1,) + lab.shape[-2:])[z][border] = 0
    return out



def _border_term(lab_s, wmap, c0, c1, r1, r2, w0, sigma) -> None:
    """Add the border term to ``wmap[:, c0:c1]`` on background with ``d1 <= r1, d2 <= r2``.

    ``lab_s``: separated labels; the strip is processed with a halo of ``k`` columns.
    """
    k1, k2 = int(r1), int(r2)
    k = max(k1, k2, 1)
    a, b = max(0, c0 - k), min(lab_s.shape[1], c1 + k)
    sub = pad_columns(lab_s[:, a:b], k)
    for y0, y1, d1sq, _, d2sq in distance_blocks(sub, k1, k2):
        ok = (d1sq <= r1 * r1) & (d2sq <= r2 * r2) & (sub[y0:y1].reshape(-1) == 0)
        if ok.any():
            t = np.sqrt(d1sq.astype(np.float32))
            t += np.sqrt(d2sq.astype(np.float32))
            t *= t
            t *= np.float32(-0.5 / sigma**2)
            t = np.exp(t, out=t)
            t *= ok
            t *= np.float32(w0)
            wmap[y0:y1, c0:c1] += t.reshape(y1 - y0, b - a + k)[:, c0 - a : c1 - a]


def _weight_2d(lab, annotated, w0, sigma, class_balance):
    """Foreground after separation borders, and Eq. 2, for one 2D slice."""
    w0, sigma = float(w0), float(sigma)
    if not (math.isfinite(w0) and w0 >= 0 and math.isfinite(sigma) and sigma > 0):
        raise ValueError(f"need finite w0 >= 0 and sigma > 0, got w0={w0}, sigma={sigma}")
    h, w = lab.shape
    lab_s = pad_columns(lab.astype(np.int16) if lab.max() < 2**15 else lab, 1)
    lab_s *= ~_border_mask(lab_s)
    lab_s = lab_s[:, :w]
    fg = lab_s > 0
    n = lab.size if annotated is None else int(np.count_nonzero(annotated))
    n_fg = int(np.count_nonzero(fg if annotated is None else fg & annotated))
    w_fg = w_bg = 1.0
    if class_balance and 0 < n_fg < n:  # w_c averages 1 over annotated pixels
        w_fg, w_bg = n / (2.0 * n_fg), n / (2.0 * (n - n_fg))
    wmap = np.full((h, w), w_bg, np.float32)
    wmap += fg * np.float32(w_fg - w_bg)
    cut, diag = cutoff_distance(sigma), math.hypot(h, w)  # no distance exceeds diag
    r1, r2 = min(cut / 2.0, diag), min(cut - 1.0, diag)  # background: 1 <= d1 <= d2
    if w0 > 0 and n_fg and r2 >= 1.0:  # else d1 + d2 >= 2 > cut on all background
        n_strips = THREADS if h * w >= _THREAD_MIN_PIXELS and w >= 8 * cut else 1
        edges = [w * j // n_strips for j in range(n_strips + 1)]
        jobs = [(lab_s, wmap, c0, c1, r1, r2, w0, sigma) for c0, c1 in zip(edges, edges[1:])]
        if n_strips == 1:
            _border_term(*jobs[0])
        else:  # NumPy releases the GIL: strips run in parallel
            with ThreadPoolExecutor(n_strips) as pool:
                list(pool.map(lambda job: _border_term(*job), jobs))
    if annotated is not None:
        wmap *= annotated
        fg &= annotated
    return fg, wmap


def check_weight_params(w0: float, sigma: float) -> None:
    """Refuse border-weight parameters that give no usable weights (inf, NaN, zero width)."""
    if not (np.isfinite(w0) and 0 <= w0 <= 1e6 and np.isfinite(sigma) and 0 < sigma <= 1e4):
        raise ValueError(f"need finite w0 >= 0 (at most 1e6) and sigma > 0 (at most 1e4 px), "
                         f"got w0={w0}, sigma={sigma}")


def border_weight_map(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0,
                      class_balance: bool = True, ignore_label: int | None = None) -> np.ndarray:
    """Loss weight map of Eq. 2 of the U-Net paper.

    Per 2D slice: (1) :func:`separation_borders` makes contacts between instances background;
    (2) ``w_c``: with ``class_balance``, foreground and background pixels (after step 1,
    annotated only) get ``n / (2 n_fg)`` and ``n / (2 n_bg)``: ``w_c`` averages 1 over the
    annotated pixels and both classes carry equal total weight; ``w_c = 1`` without
    ``class_balance`` or when a class is absent; (3) as in the authors' reference
    implementation, ``w0 exp(-(d1 + d2)**2 / (2 sigma**2))`` is added on background pixels
    only (separation borders included), ``d1``/``d2`` measured to the separated instances;
    (4) ``ignore_label`` pixels get 0.

    Approximation: the border term is evaluated only where ``d1 <= R/2`` and ``d2 <= R - 1``,
    ``R = cutoff_distance(sigma) = sigma sqrt(2 ln 1e6)``, and there ``d1``, ``d2`` are exact.
    Every background pixel with ``d1 + d2 <= R`` is included (``1 <= d1 <= d2``), so wherever
    the exact term is ``>= 1e-6 w0`` the result is exact (float32 rounding aside); elsewhere the
    term, ``< 1e-6 w0``, is dropped: ``|w - w_exact| < 1e-6 w0`` everywhere.

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels, 2D or (Z, Y, X) (per slice, ``w_c`` per slice); a binary mask is
        split into 8-connected components first.
    w0 : float
        Border weight, >= 0.
    sigma : float
        Border width in pixels, > 0.
    class_balance : bool
        Use the class-balancing ``w_c`` above (else ``w_c = 1``).
    ignore_label : int, optional
        Unannotated pixels: weight 0, excluded from class frequencies, never instances.

    Returns
    -------
    numpy.ndarray
        float32, shaped like ``labels``, finite, >= 0. A slice without instances gets
        ``w = w_c``; with one instance ``d2 = inf`` and the border term is 0.
    """
    check_weight_params(w0, sigma)
    arr = np.asarray(labels)
    if arr.ndim == 3 and arr.shape[-1] in (3, 4) and min(arr.shape[:2]) > 4:
        raise ValueError(f"labels of shape {arr.shape} look like an RGB(A) image: give instance "
                         "labels, one integer per object")
    _, lab, annotated = prepare_labels(labels, ignore_label)
    out = np.empty(lab.shape, np.float32)
    for z, sl in enumerate(lab.reshape((-1,) + lab.shape[-2:])):
        ann = None if annotated is None else annotated.reshape(-1, *sl.shape)[z]
        out.reshape(-1, *sl.shape)[z] = _weight_2d(sl, ann, w0, sigma, class_balance)[1]
    return out


@dataclass(frozen=True)
class TargetConfig:
    """What a labelled slice is trained towards: the keywords of :func:`training_targets`.

    ``expand_labels`` None means the model's own setting (see
    :func:`napari_unet.training.samples.target_expansion`); the other fields are as in
    :func:`border_weight_map`. :class:`napari_unet.training.train.TrainConfig` holds them
    flat (its ``targets``), so that its checkpoints keep their form.
    """

    w0: float = 10.0
    sigma: float = 5.0
    class_balance: bool = True
    ignore_label: int | None = None
    expand_labels: int | None = None

    def __post_init__(self) -> None:
        check_weight_params(self.w0, self.sigma)


def training_targets(labels: np.ndarray, w0: float = 10.0, sigma: float = 5.0,
                     class_balance: bool = True, ignore_label: int | None = None,
                     expand_labels: int = 0):
    """Class target and loss weights of one 2D training sample.

    Parameters
    ----------
    labels : numpy.ndarray
        2D instance labels (or a binary mask).
    w0, sigma, class_balance, ignore_label
        As in :func:`border_weight_map`.
    expand_labels : int
        First grow every instance by up to this many pixels into the background
        (``skimage.segmentation.expand_labels``: never into another instance, never into
        ignored pixels). For cells that tile the image (EM), a value above the membranes'
        half-width leaves only the separation borders as background: the targets become
        thin, closed lines between cells.

    Returns
    -------
    target : numpy.ndarray
        int64: 1 on instance pixels after separation borders, else 0 (ignored pixels too).
    weight : numpy.ndarray
        float32 :func:`border_weight_map` (0 on ignored pixels).
    """
    if np.ndim(labels) != 2:
        raise ValueError(f"training_targets takes one 2D slice, got shape {np.shape(labels)}")
    _, lab, annotated = prepare_labels(labels, ignore_label)
    if expand_labels > 0:
        from skimage.segmentation import expand_labels as _expand

        grown = _expand(lab, int(expand_labels))  # ignored pixels are 0 in ``lab``
        lab = grown if annotated is None else np.where(annotated, grown, 0)
    fg, weight = _weight_2d(lab, annotated, w0, sigma, class_balance)
    return fg.astype(np.int64), weight
