"""Segmentation quality metrics used by ``napari-unet evaluate`` and the benchmarks."""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from skimage.measure import label as cc_label


def iou_matrix(truth: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """IoU between every true object (rows) and predicted object (columns) of 2D labels."""
    tu, ti = np.unique(np.asarray(truth).ravel(), return_inverse=True)
    pu, pi = np.unique(np.asarray(pred).ravel(), return_inverse=True)
    inter = np.bincount(ti * len(pu) + pi, minlength=len(tu) * len(pu)).reshape(len(tu), len(pu))
    union = inter.sum(axis=1, keepdims=True) + inter.sum(axis=0, keepdims=True) - inter
    iou = inter / np.maximum(union, 1)
    return iou[tu != 0][:, pu != 0]


def match_f1(truth: np.ndarray, pred: np.ndarray, iou_threshold: float = 0.5) -> dict[str, float]:
    """F1 at IoU >= ``iou_threshold`` with one-to-one Hungarian matching on IoU.

    Returns
    -------
    dict
        ``tp``, ``fp``, ``fn``, ``f1`` (1.0 when both are empty), ``effort`` = fp + fn
        (objects to add, delete or change).
    """
    iou = iou_matrix(truth, pred)
    n_true, n_pred = iou.shape
    tp = 0
    if n_true and n_pred:
        rows, cols = linear_sum_assignment(-iou)
        tp = int((iou[rows, cols] >= iou_threshold).sum())
    fp, fn = n_pred - tp, n_true - tp
    f1 = 1.0 if n_true + n_pred == 0 else 2 * tp / (2 * tp + fp + fn)
    return {"tp": tp, "fp": fp, "fn": fn, "f1": f1, "effort": fp + fn}


def adapted_rand(truth: np.ndarray, pred_interior: np.ndarray) -> float:
    """Foreground-restricted adapted Rand error (true label 0 ignored).

    ``pred_interior`` is a boolean cell-interior mask (or labels); its 4-connected
    components are compared with ``truth`` by ``skimage.metrics.adapted_rand_error``.
    """
    from skimage.metrics import adapted_rand_error

    pred = np.asarray(pred_interior)
    pred_lab = cc_label(pred > 0, connectivity=1) if pred.dtype == bool or pred.max() <= 1 else pred
    err, _, _ = adapted_rand_error(np.asarray(truth).astype(np.int64),
                                   pred_lab.astype(np.int64), ignore_labels=(0,))
    return float(err)


def _check_pair(truth: Any, pred: Any) -> tuple[np.ndarray, np.ndarray]:
    """Refuse inputs that cannot be scored: shapes, emptiness, types, signs, NaN."""
    t, p = np.asarray(truth), np.asarray(pred)
    if t.shape != p.shape:
        raise ValueError(f"truth shape {t.shape} differs from prediction shape {p.shape}")
    if t.size == 0 or t.ndim not in (2, 3):
        raise ValueError(f"expected 2D or (Z, Y, X) images, got shape {t.shape}")
    if t.dtype.kind not in "biuf" or (t.dtype.kind == "f" and not (
            np.isfinite(t).all() and (t == np.round(t)).all())):
        raise ValueError(f"the ground truth must be integer labels, got {t.dtype}")
    if p.dtype.kind not in "biuf":
        raise ValueError(f"the prediction must be labels, a mask or probabilities, got {p.dtype}")
    if t.min() < 0 or (p.dtype.kind in "iu" and p.min() < 0):
        raise ValueError("labels must not be negative")
    if p.dtype.kind == "f" and not np.isfinite(p).all():
        raise ValueError("the prediction holds NaN or infinite values")
    if not t.any():
        raise ValueError("the ground truth holds no objects: nothing to score")
    return t, p


def evaluate_nuclei(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Mean F1 at IoU 0.5 (and effort) over the slices of 2D or ``(Z, Y, X)`` labels.

    Raises
    ------
    ValueError
        For inputs that cannot be scored: different shapes, empty arrays, non-integer or
        negative truth, NaN, complex or negative predictions, a truth without objects.
    """
    t, p = _check_pair(truth, pred)
    t3, p3 = (t[None], p[None]) if t.ndim == 2 else (t, p)
    rows = [match_f1(a, b) for a, b in zip(t3, p3, strict=True)]
    return {"f1": float(np.mean([r["f1"] for r in rows])),
            "effort": int(sum(r["effort"] for r in rows)),
            "pixels_differing": int(((t3 > 0) != (p3 > 0)).sum()), "n_images": len(rows)}


def evaluate_em(truth: np.ndarray, pred: np.ndarray) -> dict[str, float]:
    """Foreground-restricted adapted Rand error and pixel error of an EM segmentation.

    Parameters
    ----------
    truth : numpy.ndarray
        2D or ``(Z, Y, X)`` labels; 0 is membrane and ignored, cells are the
        4-connected components of the rest.
    pred : numpy.ndarray
        The prediction, one of:

        - instance labels (integers): scored as they are, 0 counting as one more
          segment (so membrane predicted inside a cell costs);
        - a boolean interior mask: its 4-connected components;
        - interior probabilities (floats): thresholded at 0.1-0.9 and the best
          threshold reported, as in the ISBI 2012 challenge and ``shared/data``'s
          README: ``adapted_rand_error`` takes the 4-connected components of the
          interior, ``adapted_rand_error_fill`` grows them into cells that tile the image
          (``fill`` of :func:`napari_unet.inference.postprocess.labels_from_probabilities`, seeds
          from 0.3-0.9), which is what the models' labels do.

    Returns
    -------
    dict
        ``adapted_rand_error``, ``pixel_error`` (interior vs membrane; probabilities at
        0.5) and ``n_images``; for probabilities also ``adapted_rand_error_fill`` and the
        best ``threshold`` of the components.

    Raises
    ------
    ValueError
        As :func:`evaluate_nuclei`.
    """
    from .inference.postprocess import labels_from_probabilities

    t, p = _check_pair(truth, pred)
    t3, p3 = (t[None], p[None]) if t.ndim == 2 else (t, p)
    cells = [cc_label(ti > 0, connectivity=1) for ti in t3]
    if p3.dtype.kind != "f":
        best = float(np.mean([adapted_rand(c, pi) for c, pi in zip(cells, p3, strict=True)]))
        return {"adapted_rand_error": best, "pixel_error": float(np.mean((t3 > 0) != (p3 > 0))),
                "n_images": len(t3)}

    def mean_error(seg: Any) -> float:
        return float(np.mean([adapted_rand(c, seg(pi)) for c, pi in zip(cells, p3, strict=True)]))

    comps = {th: mean_error(lambda pi, th=th: pi > th) for th in np.round(np.arange(0.1, 0.95, 0.1), 1)}
    best_th = min(comps, key=comps.get)
    filled = min(mean_error(lambda pi, th=th: labels_from_probabilities(
        np.stack([1 - pi, pi]), threshold=th, fill=True)) for th in (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))
    return {"adapted_rand_error": comps[best_th], "threshold": float(best_th),
            "adapted_rand_error_fill": filled, "pixel_error": float(np.mean((t3 > 0) != (p3 > 0.5))),
            "n_images": len(t3)}
