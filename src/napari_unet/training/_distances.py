"""Distances to the nearest and second-nearest instance (``d1``/``d2`` of Eq. 2), NumPy/SciPy only.

Used by :mod:`napari_unet.training.border_weights` (which re-exports the public functions).
Labels: 0 background, > 0 instances, ``ignore_label`` unannotated (never an instance);
validation and binary-mask splitting are done by :func:`prepare_labels`, shared with
:mod:`napari_unet.training.border_weights`.

Method: a windowed, exact, separable Euclidean transform in whole-array NumPy operations: a
column scan finds the two nearest distinct instances of every pixel in its column, then shifts
along x by ``|dx| <= k`` combine columns. Squared distances are integers: values within the
window are exact; the only approximation is beyond it (see the public functions).
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage as ndi

__all__ = ["border_distances", "cutoff_distance"]

#: Relative size below which the border term is neglected (see :func:`cutoff_distance`).
TOLERANCE = 1e-6
#: Window of the NumPy pass in exact :func:`border_distances`; farther ``d2`` use SciPy crops.
EXACT_WINDOW = 32
_BLOCK_ELEMENTS = 1 << 16  # elements per row block: keeps the working set in cache


def cutoff_distance(sigma: float = 5.0, tolerance: float = TOLERANCE) -> float:
    """Return the ``d1 + d2`` beyond which the border term is below ``tolerance * w0``.

    Parameters
    ----------
    sigma, tolerance : float
        The ``sigma`` of Eq. 2 (pixels); the relative size of the neglected term, in (0, 1).

    Returns
    -------
    float
        ``sigma * sqrt(2 ln(1 / tolerance))`` (26.28 px for the defaults).
    """
    return float(sigma) * math.sqrt(2.0 * math.log(1.0 / tolerance))


def prepare_labels(labels, ignore_label, relabel: bool = True):
    """Validate; return (array, int32/int64 instance labels, annotated mask or None)."""
    if ignore_label is not None:
        if isinstance(ignore_label, bool) or not isinstance(
                ignore_label, (int, float, np.integer, np.floating)) or ignore_label % 1:
            raise TypeError(f"ignore_label must be an integer or None, got {ignore_label!r}")
        ignore_label = int(ignore_label)
        if ignore_label == 0:
            raise ValueError("ignore_label=0 is not allowed: 0 is the background label")
    arr = np.asarray(labels)
    if arr.dtype.kind == "f":
        if not np.isfinite(arr).all():
            raise ValueError("labels contain NaN or infinite values")
        if not np.array_equal(arr, np.round(arr)):
            raise ValueError(f"labels must be integer-valued; got non-integer {arr.dtype} values")
    elif arr.dtype.kind not in "biu":
        raise TypeError(f"labels must be an integer, integer-valued float or bool array, "
                        f"got dtype {arr.dtype}")
    if arr.ndim not in (2, 3):
        raise ValueError(f"labels must be 2D (Y, X) or a 3D stack (Z, Y, X), got {arr.shape}")
    if arr.size == 0:
        raise ValueError(f"labels are empty (shape {arr.shape})")
    annotated = None if ignore_label is None else arr != ignore_label
    if annotated is not None and annotated.all():
        annotated = None
    if arr.dtype.kind in "if" and arr.min() < 0:
        neg = (arr < 0) if annotated is None else (arr < 0) & annotated
        if neg.any():
            raise ValueError(f"labels contain negative values (min {arr[neg].min()}); labels "
                             "must be >= 0 or equal to ignore_label")
    lab = arr if annotated is None else np.where(annotated, arr, 0)
    high = int(lab.max())
    if high <= 1 and relabel:  # binary mask: 8-connected components, per slice
        structure = np.ones((3, 3) if arr.ndim == 2 else (1, 3, 3), bool)
        lab = ndi.label(lab.astype(bool), structure=structure)[0]
    elif high >= min(2**31 - 1, 4 * lab.size + 1024):  # sparse/huge ids: renumber 1..n
        ids, inverse = np.unique(lab, return_inverse=True)
        lab = inverse.reshape(lab.shape) + (ids[0] != 0)
    return arr, lab.astype(np.int32 if lab.max() < 2**31 - 1 else np.int64, copy=False), annotated


def pad_columns(a: np.ndarray, p: int) -> np.ndarray:
    """Copy of 2D ``a`` plus ``p`` zero columns: flat shifts by ``<= p`` never mix rows."""
    out = np.zeros((a.shape[0], a.shape[1] + p), a.dtype)
    out[:, : a.shape[1]] = a
    return out



def _scan(lab, pos, state, label_bits, k, dist_dtype, label_dtype, down):
    """Nearest and second-nearest distinct instance above (below if ``down``) in the column.

    Keys ``pos << label_bits | label`` (``pos`` offset by k + 1: "none", key 0, decodes to > k): a
    running maximum picks the latest instance pixel; the second distinct one is the latest
    instance pixel before the run holding it. Returns ``(g1sq, label1, g2sq)``, capped.
    """
    r, width = lab.shape
    fg, lmask = lab > 0, (1 << label_bits) - 1
    bufs = np.empty((2, r + 1, width), lab.dtype)
    views = bufs[:, ::-1] if down else bufs  # scan order; row 0 holds the state
    views[:, 0] = state
    cur1, cur2 = views[0, 1:], views[1, 1:]
    np.bitwise_or(lab[::-1] if down else lab, (pos << label_bits)[::-1 if down else 1, None], out=cur1)
    cur1 *= fg[::-1] if down else fg
    for j in (0, 1):
        if j:  # run starts: instance pixels whose previous instance pixel is another one
            prev1 = views[0, :-1]
            start = (prev1 & lmask) != (lab[::-1] if down else lab)
            start &= fg[::-1] if down else fg
            np.multiply(prev1, start, out=cur2)
        if r > 64:  # many short rows: one accumulate beats a loop over rows
            np.maximum.accumulate(views[j], axis=0, out=views[j])
        else:
            for i in range(1, r + 1):
                np.maximum(views[j, i - 1], views[j, i], out=views[j, i])
    state[...] = views[:, -1]
    out = []
    for cur in (bufs[0, 1:], bufs[1, 1:]) if not down else (bufs[0, :-1], bufs[1, :-1]):
        d = np.minimum(pos[:, None] - (cur >> label_bits), k + 1).astype(dist_dtype)
        out.append(np.multiply(d, d, out=d).reshape(-1))
    lab1 = (bufs[0, 1:] if not down else bufs[0, :-1]) & lmask
    return out[0], lab1.astype(label_dtype).reshape(-1), out[1]


def distance_blocks(lab_p: np.ndarray, k1: int, k2: int, n1_p: np.ndarray | None = None):
    """Yield ``(y0, y1, d1sq, n1, d2sq)`` (flat) per row block of labels padded by >= k.

    Exact where ``d1sq <= k1**2`` (``n1``: nearest instance; ``d1sq`` None if ``n1_p`` is
    given) and ``d2sq <= k2**2``; larger values are bounds/caps: "beyond the window".
    """
    h, width = lab_p.shape
    k, high = max(k1, k2), int(lab_p.max())
    label_bits = max(1, high.bit_length())
    scan_dtype = np.int32 if (h + k + 2) << label_bits < 2**31 else np.int64
    dist_dtype = np.int16 if 3 * (k + 1) ** 2 < 2**15 else np.int32
    label_dtype = np.int16 if high < 2**15 else scan_dtype
    row_key_dtype = np.int32 if (2 * (k + 1) ** 2) << label_bits < 2**31 else np.int64
    lab_p = lab_p.astype(scan_dtype, copy=False)
    step = max(1, _BLOCK_ELEMENTS // width)
    starts = range(0, h, step)
    a1, a2 = np.empty(h * width, dist_dtype), np.empty(h * width, dist_dtype)
    up_label1 = np.empty(h * width, label_dtype)
    state = np.zeros((2, width), scan_dtype)
    for y0 in starts:
        y1 = min(h, y0 + step)
        pos = np.arange(y0, y1, dtype=scan_dtype) + (k + 1)
        f = slice(y0 * width, y1 * width)
        a1[f], up_label1[f], a2[f] = _scan(lab_p[y0:y1], pos, state, label_bits, k, dist_dtype,
                                           label_dtype, False)
    state[:] = 0
    for y0 in reversed(starts):
        y1 = min(h, y0 + step)
        pos = (h - 1 + k + 1) - np.arange(y0, y1, dtype=scan_dtype)
        f = slice(y0 * width, y1 * width)
        b1, down_label1, b2 = _scan(lab_p[y0:y1], pos, state, label_bits, k, dist_dtype, label_dtype, True)
        # merge up/down: two nearest distinct instances in the column (a2 >= a1, b2 >= b1)
        same, upfirst = up_label1[f] == down_label1, a1[f] <= b1
        column_d1sq = np.minimum(a1[f], b1)
        column_label1 = up_label1[f] - down_label1
        column_label1 *= upfirst
        column_label1 += down_label1
        x = np.minimum(np.maximum(a1[f], a2[f] * (same | upfirst)),
                       np.maximum(b1, b2 * (same | ~upfirst)))
        x -= column_d1sq  # extra cost where the column's nearest is the pixel's own nearest
        if n1_p is None:
            keys = (column_d1sq.astype(row_key_dtype) << label_bits) | column_label1
            best = _row_min(keys, min(k1, width - 1), label_bits)
            d1sq, n1 = best >> label_bits, (best & ((1 << label_bits) - 1)).astype(label_dtype)
        else:
            d1sq, n1 = None, n1_p[y0:y1].reshape(-1).astype(label_dtype)
        yield y0, y1, d1sq, n1, _row_second(column_d1sq, column_label1, x, n1, min(k2, width - 1))


def _row_min(keys: np.ndarray, k: int, label_bits: int) -> np.ndarray:
    """``min over |dx| <= k`` of ``keys[x + dx] + dx**2`` (keys: ``dsq << label_bits | label``)."""
    out, tmp, n = keys.copy(), np.empty_like(keys), keys.size
    for dx in range(1, k + 1):
        m = n - dx
        np.minimum(out[:m], np.add(keys[dx:], (dx * dx) << label_bits, out=tmp[:m]), out=out[:m])
        np.minimum(out[dx:], np.add(keys[:m], (dx * dx) << label_bits, out=tmp[:m]), out=out[dx:])
    return out


def _row_second(column_d1sq, column_label1, x, n1, k: int) -> np.ndarray:
    """``min over |dx| <= k`` of ``dx**2`` + column distance to an instance ``!= n1``.

    (the column's nearest ``column_d1sq`` unless its label ``column_label1`` is ``n1``; then
    ``column_d1sq + x``)
    """
    n, tmp = column_d1sq.size, np.empty_like(column_d1sq)
    eq = np.equal(column_label1, n1)
    out = np.multiply(x, eq)
    out += column_d1sq
    for dx in range(1, k + 1):
        m = n - dx
        for dst, src in ((slice(0, m), slice(dx, n)), (slice(dx, n), slice(0, m))):
            c = np.multiply(x[src], np.equal(column_label1[src], n1[dst], out=eq[:m]), out=tmp[:m])
            c += column_d1sq[src]
            c += dx * dx
            np.minimum(out[dst], c, out=out[dst])
    return out


def _windowed_2d(lab: np.ndarray, r: float):
    """``d1``/``d2`` of one 2D slice, exact up to ``r`` and ``inf`` beyond."""
    h, w = lab.shape
    r = min(r, math.hypot(h, w))  # no distance is larger; keeps the cap k + 1 above r
    k = int(r)
    p = max(k, 1)
    d1, d2 = np.empty((h, w), np.float32), np.empty((h, w), np.float32)
    for y0, y1, d1sq, _, d2sq in distance_blocks(pad_columns(lab, p), k, k):
        a, b = np.sqrt(d1sq.astype(np.float32)), np.sqrt(d2sq.astype(np.float32))
        b[(d1sq > r * r) | (d2sq > r * r)] = np.inf
        a[d1sq > r * r] = np.inf
        d1[y0:y1] = a.reshape(y1 - y0, w + p)[:, :w]
        d2[y0:y1] = b.reshape(y1 - y0, w + p)[:, :w]
    return d1, d2


def _exact_2d(lab: np.ndarray):
    """Exact ``d1``/``d2`` of one 2D slice.

    SciPy EDT for ``d1``, the NumPy pass for ``d2 <= EXACT_WINDOW``; farther: one SciPy EDT
    per nearest instance over its far pixels' box grown by a bound on their ``d2``.
    """
    h, w = lab.shape
    d1, d2 = np.full((2, h, w), np.inf, np.float32)
    boxes = {i + 1: b for i, b in enumerate(ndi.find_objects(lab)) if b is not None}
    if not boxes:
        return d1, d2
    dist, (iy, ix) = ndi.distance_transform_edt(lab == 0, return_indices=True)
    d1[...] = dist
    if len(boxes) < 2:
        return d1, d2
    n1 = lab[iy, ix]
    k, todo = min(EXACT_WINDOW, int(math.hypot(h, w))), np.empty((h, w), bool)
    for y0, y1, _, _, d2sq in distance_blocks(pad_columns(lab, k), 0, k, pad_columns(n1, k)):
        blk = d2sq.reshape(y1 - y0, w + k)[:, :w]
        d2[y0:y1] = np.sqrt(blk.astype(np.float32))
        todo[y0:y1] = blk > k * k
    ids = np.array(list(boxes))
    box = np.array([[b[0].start, b[0].stop, b[1].start, b[1].stop] for b in boxes.values()])
    for i0, grp in enumerate(ndi.find_objects(np.where(todo, n1, 0))):
        if grp is None:
            continue
        y0, y1, x0, x1 = grp[0].start, grp[0].stop, grp[1].start, grp[1].stop
        o = box[ids != i0 + 1]
        diag2 = ((np.maximum(o[:, 1], y1) - np.minimum(o[:, 0], y0)) ** 2
                 + (np.maximum(o[:, 3], x1) - np.minimum(o[:, 2], x0)) ** 2)
        bound = math.ceil(math.sqrt(diag2.min()))
        cy = slice(max(0, y0 - bound), min(h, y1 + bound))
        cx = slice(max(0, x0 - bound), min(w, x1 + bound))
        sub = lab[cy, cx]
        sel = todo[cy, cx] & (n1[cy, cx] == i0 + 1)
        d2[cy, cx][sel] = ndi.distance_transform_edt((sub == 0) | (sub == i0 + 1))[sel]
    return d1, d2


def border_distances(labels: np.ndarray, *, max_distance: float | None = None,
                     ignore_label: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Distances from every pixel to the nearest and the second-nearest instance.

    ``d1(x) = min_i dist(x, I_i)``, ``d2(x)`` the second smallest, with ``dist(x, I_i)`` the
    exact Euclidean distance between pixel centres to the closest pixel of instance ``i``
    (``scipy.ndimage.distance_transform_edt(labels != i)``). On instance pixels ``d1 = 0`` and
    ``d2`` is the distance to the nearest other instance. Separation borders are *not* applied
    (call :func:`~napari_unet.training.border_weights.separation_borders` first for the distances of
    :func:`~napari_unet.training.border_weights.border_weight_map`).

    Parameters
    ----------
    labels : numpy.ndarray
        Instance labels, 2D or (Z, Y, X) (per slice); a binary mask is split into components.
    max_distance : float, optional
        ``None`` (default): exact everywhere. Otherwise distances larger than ``max_distance``
        are ``inf`` (faster); every finite value is exact.
    ignore_label : int, optional
        Unannotated pixels: not instances (they still get distances).

    Returns
    -------
    d1, d2 : numpy.ndarray
        float32, shaped like ``labels``; ``d2 = inf`` in a slice with fewer than two
        instances, ``d1 = d2 = inf`` in a slice without instances.
    """
    if max_distance is not None:
        max_distance = float(max_distance)
        if not max_distance > 0:
            raise ValueError(f"max_distance must be > 0 or None, got {max_distance}")
    _, lab, _ = prepare_labels(labels, ignore_label)
    d1, d2 = np.empty((2,) + lab.shape, np.float32)
    for z, sl in enumerate(lab.reshape((-1,) + lab.shape[-2:])):
        if max_distance is None or math.isinf(max_distance):
            a, b = _exact_2d(sl)
        elif not sl.any():
            a = b = np.inf
        else:
            a, b = _windowed_2d(sl, max_distance)
        d1.reshape((-1,) + lab.shape[-2:])[z] = a
        d2.reshape((-1,) + lab.shape[-2:])[z] = b
    return d1, d2
