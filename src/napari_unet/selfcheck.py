"""A round's self-check: held-back blocks, post-processing tuned there, parent against new.

Used by :mod:`napari_unet.loop`.
"""

from __future__ import annotations

from collections.abc import Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .metrics import adapted_rand, match_f1
from .postprocess import labels_from_probabilities, postprocess_settings

Box = tuple[slice, slice]
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def holdout_box(shape: tuple[int, ...], index: int, fraction: float) -> Box | None:
    """The block of a ``(Y, X)`` slice held back from training, or None.

    A rectangle of ``fraction`` of the area (``sqrt(fraction)`` of each side) in one of the
    four corners, the corner turning with ``index`` so that slices hold back different
    parts. None when ``fraction`` is 0 or the slice is under 32 px on a side.
    """
    if fraction <= 0 or min(shape[-2:]) < 32:
        return None
    ny, nx = shape[-2:]
    by, bx = (max(16, int(round(n * np.sqrt(fraction)))) for n in (ny, nx))
    corner = index % 4
    y0 = 0 if corner in (0, 1) else ny - by
    x0 = 0 if corner in (0, 3) else nx - bx
    return slice(y0, y0 + by), slice(x0, x0 + bx)


def predict_slices(model: Any, images: Sequence[np.ndarray], device: str,
                   ) -> Generator[str, None, list[np.ndarray]]:
    """Class probabilities of ``(C, Y, X)`` slices (one plain pass each, no TTA).

    A generator: it yields after every batch of tiles, so that a round can be stopped
    within a tile's time, and returns the probabilities.
    """
    from .predict import predict_iter

    out = []
    for i, img in enumerate(images, 1):
        gen = predict_iter(model, img, channel_axis=0, tta=False, device=device)
        while True:
            try:
                next(gen)
            except StopIteration as stop:
                out.append(stop.value.probabilities)
                break
            yield f"predicting slice {i}/{len(images)}"
    return out


def _fg_truth(model: Any, lab: np.ndarray) -> np.ndarray:
    """The foreground the network is trained to predict (interior for EM models)."""
    from .weights import training_targets

    expand = int(getattr(model, "record", {}).get("expand_labels", 0) or 0)
    if not expand:
        return lab > 0
    target, _ = training_targets(lab, expand_labels=expand)
    return target == 1


def _balanced_accuracy(prob_fg: np.ndarray, truth: np.ndarray, mask: np.ndarray) -> float:
    pred = prob_fg > 0.5
    t, p = truth[mask], pred[mask]
    tpr = (p & t).sum() / max(1, t.sum())
    tnr = (~p & ~t).sum() / max(1, (~t).sum())
    return float(0.5 * (tpr + tnr))


def pixel_agreement(model: Any, probs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    boxes: Mapping[int, Box]) -> float:
    """Mean balanced pixel accuracy of ``model``'s ``probs`` on the trained pixels."""
    scores = []
    for i, (p, lab) in enumerate(zip(probs, labels, strict=True)):
        mask = np.ones(lab.shape, bool)
        if i in boxes:
            mask[boxes[i]] = False
        scores.append(_balanced_accuracy(p[1], _fg_truth(model, lab), mask))
    return float(np.mean(scores))


def _candidates(settings: dict[str, Any]) -> list[dict[str, Any]]:
    if settings["fill"]:
        return [{**settings, "threshold": t} for t in THRESHOLDS]
    out = []
    for t in THRESHOLDS[:-1]:
        seeds = [None] + [s for s in (t + 0.1, t + 0.2) if s < 0.99]
        out += [{**settings, "threshold": t, "seed_threshold": s} for s in seeds]
    return out


def _block_score(settings: dict[str, Any], probs: Sequence[np.ndarray],
                 labels: Sequence[np.ndarray], boxes: Sequence[Box | None]) -> float:
    vals = []
    for p, lab, box in zip(probs, labels, boxes, strict=True):
        outer, inner = _with_margin(box, lab.shape)
        seg = labels_from_probabilities(p[(slice(None), *outer)], **settings)[inner]
        truth = lab[outer][inner]
        vals.append(adapted_rand(truth, seg) if settings["fill"] else match_f1(truth, seg)["f1"])
    return float(np.mean(vals))


def _with_margin(box: Box | None, shape: tuple[int, ...], margin: int = 48) -> tuple[Box, Box]:
    """The box grown by ``margin`` (post-processing context) and the box inside that."""
    if box is None:
        return (slice(None), slice(None)), (slice(None), slice(None))
    outer = tuple(slice(max(0, b.start - margin), min(n, b.stop + margin))
                  for b, n in zip(box, shape[-2:], strict=True))
    inner = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer,
                                                                             strict=True))
    return outer, inner


def tune_postprocess(settings: dict[str, Any], probs: Sequence[np.ndarray],
                     labels: Sequence[np.ndarray], boxes: Sequence[Box | None],
                     ) -> tuple[dict[str, Any], float]:
    """The candidate settings that score best on the boxes, and their score."""
    sign = -1.0 if settings["fill"] else 1.0
    scored = [(sign * _block_score(c, probs, labels, boxes), i, c)
              for i, c in enumerate(_candidates(settings))]
    best = max(scored, key=lambda s: (s[0], -abs(s[2]["threshold"] - settings["threshold"])))
    return best[2], sign * best[0]


@dataclass
class CheckResult:
    """Parent against new on the held-back blocks."""

    metric: str
    parent_score: float
    new_score: float
    better: bool
    new_postprocess: dict[str, Any]


def score_blocks(parent: Any, new: Any, images: Sequence[np.ndarray],
                 labels: Sequence[np.ndarray], boxes: Mapping[int, Box], device: str,
                 retune: bool = True, parent_probs: Sequence[np.ndarray] | None = None,
                 ) -> Generator[str, None, CheckResult]:
    """Score both models on the held-back blocks (whole slices when none is held back).

    With ``retune`` each model's seed thresholds are tuned on the blocks first (the same
    candidates for both, so the comparison stays even); the new model keeps its tuned
    settings. The new model is ``better`` when its score beats the parent's, ties broken by
    the pixel agreement. ``parent_probs``: the parent's predictions, if already made.
    """
    settings = postprocess_settings(parent)
    fill = bool(settings["fill"])
    bxs = [boxes.get(i) for i in range(len(labels))]
    p_probs = parent_probs if parent_probs is not None else \
        (yield from predict_slices(parent, images, device))
    n_probs = yield from predict_slices(new, images, device)
    if retune:
        _, p_score = tune_postprocess(settings, p_probs, labels, bxs)
        n_set, n_score = tune_postprocess(settings, n_probs, labels, bxs)
    else:
        n_set = settings
        p_score = _block_score(settings, p_probs, labels, bxs)
        n_score = _block_score(settings, n_probs, labels, bxs)
    gain = (p_score - n_score) if fill else (n_score - p_score)
    if abs(gain) < 1e-9:
        def pix(model: Any, probs: Sequence[np.ndarray]) -> float:
            return float(np.mean([_balanced_accuracy(
                p[1][b or (slice(None), slice(None))],
                _fg_truth(model, lab)[b or (slice(None), slice(None))],
                np.ones_like(lab[b or (slice(None), slice(None))], bool))
                for p, lab, b in zip(probs, labels, bxs, strict=True)]))
        gain = pix(new, n_probs) - pix(parent, p_probs)
    return CheckResult("adapted Rand error" if fill else "F1", p_score, n_score, gain > 0,
                       n_set)
