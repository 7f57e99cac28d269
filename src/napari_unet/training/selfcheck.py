"""A round's self-check: held-back blocks, post-processing tuned there, parent against new.

Used by :mod:`napari_unet.training.loop`.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..inference.postprocess import labels_from_probabilities, postprocess_settings
from ..jobs import Event, Stage
from ..metrics import adapted_rand, match_f1
from ..model_record import ModelRecord
from ._ties import decisive, f1_noise, n_objects

Box = tuple[slice, slice]
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def holdout_box(shape: tuple[int, ...], index: int, fraction: float,
                labels: np.ndarray | None = None) -> Box | None:
    """The block of a ``(Y, X)`` slice held back from training, or None.

    A rectangle of ``fraction`` of the area (``sqrt(fraction)`` of each side) in one of the
    four corners, the corner turning with ``index`` so that slices hold back different
    parts. With the slice's ``labels`` (two objects or more), a corner holding objects (those
    with half their area or more inside) but not more than half of them, the one whose count
    is closest to the slice's share (``fraction`` of them, at least one), the turning order
    breaking ties (and deciding when no corner qualifies): a corner of sparse nuclei often
    holds none, and a check on an empty block (F1 1.000 for any model) decided nothing
    (scale2x: 0 objects in 2 of 4 single-slice blocks). None when ``fraction`` is 0 or the
    slice is under 32 px on a side.
    """
    if fraction <= 0 or min(shape[-2:]) < 32:
        return None
    ny, nx = shape[-2:]
    by, bx = (max(16, int(round(n * np.sqrt(fraction)))) for n in (ny, nx))

    def box(corner: int) -> Box:
        y0 = 0 if corner in (0, 1) else ny - by
        x0 = 0 if corner in (0, 3) else nx - bx
        return slice(y0, y0 + by), slice(x0, x0 + bx)

    order = [(index + i) % 4 for i in range(4)]
    if labels is None:
        return box(order[0])
    raw = np.asarray(labels)
    ids, dense = np.unique(np.where(raw > 0, raw, 0), return_inverse=True)  # any painted id
    lab = (dense + int(ids[0] != 0)).reshape(raw.shape)  # 0 stays the background
    area = np.bincount(lab.ravel())
    present = area > 0
    present[0] = False
    n = int(present.sum())
    if n < 2:
        return box(order[0])
    share = max(1.0, fraction * n)

    def inside(b: Box) -> int:
        part = np.bincount(lab[b].ravel(), minlength=area.size)
        return int(np.count_nonzero(present & (2 * part >= area)))

    counts = {c: inside(box(c)) for c in order}
    fair = [c for c in order if 1 <= counts[c] <= max(1, n // 2)]  # training keeps the most
    return box(min(fair, key=lambda c: (abs(counts[c] - share), order.index(c)))
               if fair else order[0])


def holdout_boxes(labels: Sequence[np.ndarray], fraction: float, whole_from: int = 0,
                  objects: bool = True) -> dict[int, Box]:
    """The held-back box of each corrected ``(Y, X)`` slice that has one.

    With fewer than ``whole_from`` slices (or ``whole_from`` 0), a corner block of each
    (:func:`holdout_box`; with ``objects``, the corner holding its share of the objects; off
    for cells that tile the image, where every corner holds many: on EM the other corner
    moved the seed threshold and the ISBI labels error went 0.043 -> 0.067). With
    ``whole_from`` or more, ``round(fraction * n)`` whole slices instead, the ones whose
    object counts are closest to the median (typical slices; ties go to the later one): an
    image the new version never saw. A block of a trained slice is too much like the trained
    part: on EM at half scale with four corrected slices the blocks picked a seed threshold
    of 0.3 (block error 0.019) where the test wanted 0.5 (0.073 against 0.040).
    """
    n = len(labels)
    if fraction <= 0 or not whole_from or n < whole_from:
        return {i: b for i, lab in enumerate(labels)
                if (b := holdout_box(lab.shape, i, fraction, lab if objects else None))
                is not None}
    counts = [len(np.unique(lab[lab > 0])) for lab in labels]
    median = float(np.median(counts))
    order = sorted(range(n), key=lambda i: (abs(counts[i] - median), -i))
    return {i: (slice(0, labels[i].shape[-2]), slice(0, labels[i].shape[-1]))
            for i in sorted(order[: max(1, int(round(fraction * n)))])}


def trainable(images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
              boxes: Mapping[int, Box]) -> tuple[list[np.ndarray], list[np.ndarray], dict[int, Box]]:
    """The slices training may use (not wholly held back), and their held-back blocks."""
    keep = [i for i, lab in enumerate(labels) if not _whole(boxes.get(i), lab.shape)]
    return ([images[i] for i in keep], [labels[i] for i in keep],
            {j: boxes[i] for j, i in enumerate(keep) if i in boxes})


def _whole(box: Box | None, shape: tuple[int, ...]) -> bool:
    return box is not None and (box[0].stop - box[0].start, box[1].stop - box[1].start) \
        == tuple(shape[-2:])


def predict_slices(model: Any, images: Sequence[np.ndarray], device: str,
                   ) -> Generator[Stage, None, list[np.ndarray]]:
    """Class probabilities of ``(C, Y, X)`` slices (one plain pass each, no TTA).

    A generator: it yields after every batch of tiles, so that a round can be stopped
    within a tile's time, and returns the probabilities.
    """
    from ..inference.predict import predict_iter

    out = []
    for i, img in enumerate(images, 1):
        gen = predict_iter(model, img, channel_axis=0, tta=False, device=device)
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                out.append(stop.value.probabilities)
                break
            yield Stage(f"predicting slice {i}/{len(images)}", _overall(i, len(images), ev))
    return out


def _overall(i: int, n: int, ev: Event) -> float | None:
    """How far item ``i`` (from 1) of ``n`` is, its own progress being ``ev``."""
    return None if ev.fraction is None else (i - 1 + ev.fraction) / n


def _fg_truth(model: Any, lab: np.ndarray) -> np.ndarray:
    """The foreground the network is trained to predict (interior for EM models)."""
    from .border_weights import training_targets

    expand = int(ModelRecord.of(model).expand_labels or 0)
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


def parent_quality(model: Any, probs: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                   ) -> float:
    """How well ``model`` segments the corrected slices as it is (its stored settings).

    Mean F1, or adapted Rand error for models whose cells fill the image.
    """
    whole = (slice(None), slice(None))
    return _block_score(postprocess_settings(model), [(p, lab, whole) for p, lab in
                                                      zip(probs, labels, strict=True)])


def _candidates(settings: dict[str, Any]) -> list[dict[str, Any]]:
    if settings["fill"]:
        return [{**settings, "threshold": t} for t in THRESHOLDS]
    out = []
    for t in THRESHOLDS[:-1]:
        seeds = [None] + [s for s in (t + 0.1, t + 0.2) if s < 0.99]
        out += [{**settings, "threshold": t, "seed_threshold": s} for s in seeds]
    return out


Region = tuple[np.ndarray, np.ndarray, Box]  # probabilities, truth, the box inside them


def _block_score(settings: dict[str, Any], regions: Sequence[Region]) -> float:
    vals = []
    for p, truth, inner in regions:
        seg = labels_from_probabilities(p, **settings)[inner]
        vals.append(adapted_rand(truth[inner], seg) if settings["fill"]
                    else match_f1(truth[inner], seg)["f1"])
    return float(np.mean(vals))


def _grow(box: Box | None, shape: tuple[int, ...], margin: int) -> tuple[Box, Box]:
    """``box`` grown by ``margin`` within ``shape``, and the box's place inside that."""
    if box is None:
        return (slice(0, shape[-2]), slice(0, shape[-1])), (slice(None), slice(None))
    outer = tuple(slice(max(0, b.start - margin), min(n, b.stop + margin))
                  for b, n in zip(box, shape[-2:], strict=True))
    inner = tuple(slice(b.start - o.start, b.stop - o.start) for b, o in zip(box, outer,
                                                                             strict=True))
    return outer, inner  # type: ignore[return-value]


def predict_regions(model: Any, images: Sequence[np.ndarray], labels: Sequence[np.ndarray],
                    boxes: Sequence[Box | None], device: str, margin: int = 48,
                    ) -> Generator[Stage, None, list[Region]]:
    """Predict each held-back box as the user would (the model's TTA), with context.

    The image is cut to the box grown by ``margin`` plus the network's halo, so that the
    box and a ``margin`` around it (for the post-processing) see the context they see in a
    whole-slice prediction; the probabilities and truth of box + ``margin`` are returned.
    """
    from ..inference.predict import predict_iter, recommended_tta

    out = []
    for i, (img, lab, box) in enumerate(zip(images, labels, boxes, strict=True), 1):
        outer, inner = _grow(box, lab.shape, margin)
        ctx, _ = _grow(outer, lab.shape, model.halo)
        gen = predict_iter(model, img[(slice(None), *ctx)], channel_axis=0,
                           tta=recommended_tta(model), device=device)
        while True:
            try:
                ev = next(gen)
            except StopIteration as stop:
                p = stop.value.probabilities
                break
            yield Stage(f"checking held-back part {i}/{len(images)}", _overall(i, len(images), ev))
        y0, x0 = outer[0].start - ctx[0].start, outer[1].start - ctx[1].start
        ny, nx = outer[0].stop - outer[0].start, outer[1].stop - outer[1].start
        out.append((p[:, y0 : y0 + ny, x0 : x0 + nx], lab[outer], inner))
    return out


def tune_postprocess(settings: dict[str, Any], regions: Sequence[Region],
                     margin: float | None = None,
                     prefer: Callable[[dict[str, Any]], float] | None = None,
                     prefer_margin: float | None = None, noise_z: float = 0.0,
                     ) -> tuple[dict[str, Any], float]:
    """The candidate settings that score best on the regions' boxes, and their score.

    Small blocks cannot justify small changes: ``settings`` are kept unless a candidate
    beats them by ``margin`` (default 0.02 in F1, 0.01 in adapted Rand error). On the ISBI
    stack a seed threshold picked for a 0.001 gain on one block doubled the error of the
    other slices' labels. Otherwise the pick is the candidate closest to ``settings`` among
    those within ``margin`` of the best (the block cannot rank them more finely).

    With ``prefer`` (a score, higher is better: see
    :class:`~napari_unet.training.agreement.Agreement`), the pick among all the candidates
    within ``margin`` of the best on the blocks (``settings`` included) is the one closest
    to ``settings``, unless the one ``prefer`` scores highest beats it there by
    ``prefer_margin`` (default: half of ``margin``; at least ``prefer.resolution`` where it
    has one). Agreement on a few uncorrected slices is noisy too: on EM at half scale after
    one corrected slice, a 0.002 gain in agreement moved
    the threshold from 0.5 to 0.4 and the test error from 0.035 to 0.062 (docs/models.md).
    For objects the margin is at least ``noise_z`` standard errors of the F1 gain on the
    blocks' objects (:func:`f1_noise`; off by default: ``RoundConfig.retune_noise_z``).
    """
    sign = -1.0 if settings["fill"] else 1.0
    margin = (0.01 if settings["fill"] else 0.02) if margin is None else margin

    def distance(c: dict[str, Any]) -> float:
        seeds = (c.get("seed_threshold"), settings.get("seed_threshold"))
        d_seed = 0.0 if seeds[0] == seeds[1] else 1.0 if None in seeds else \
            abs(seeds[0] - seeds[1])
        return abs(c["threshold"] - settings["threshold"]) + d_seed

    base = sign * _block_score(settings, regions)
    scored = [(sign * _block_score(c, regions), -distance(c), i, c)
              for i, c in enumerate(_candidates(settings))]
    top = max(max(c[0] for c in scored), base)
    if noise_z > 0 and not settings["fill"]:
        margin = max(margin, noise_z * f1_noise(base, top, n_objects(regions)))
    if prefer is not None:
        near = [(s, d, i, c) for s, d, i, c in scored + [(base, 0.0, -1, settings)]
                if s >= top - margin]
        closest = max(near, key=lambda s: (s[1], s[0], -s[2]))
        best = max(near, key=lambda s: (round(prefer(s[3]), 6), s[1], s[0], -s[2]))
        need = margin / 2 if prefer_margin is None else prefer_margin
        need = max(need, float(getattr(prefer, "resolution", 0.0)))
        pick = best if prefer(best[3]) >= prefer(closest[3]) + need else closest
        return pick[3], sign * pick[0]
    if top < base + margin:
        return settings, sign * base
    near = [c for c in scored if c[0] >= top - margin and c[0] >= base + margin]
    best = max(near, key=lambda s: (s[1], s[0], -s[2]))
    return best[3], sign * best[0]


def seen_step_up(settings: dict[str, Any]) -> dict[str, Any]:
    """``settings`` with the next higher threshold, for cells that tile the image.

    For blocks of slices the new version trained on, which are optimistic: it draws their
    membranes confidently, so they rate low interior thresholds as well as any, where on
    unseen slices the same thresholds merge cells across fainter membranes (error 0.1-0.5 at
    0.3, against 0.04-0.08 at 0.6-0.7). Replayed on 16 EM rounds of one and two corrected
    slices, one step up took the mean test error from 0.067 to 0.057 (docs/models.md,
    session 13). A whole held-back slice (four corrections or more) is unseen but only one:
    too low a threshold merges cells, too high a one only splits a few. There the step
    helped rounds that adapt a failing parent (4 of 4, by 0.003-0.042) or blend back into
    a good one (4 of 4, by 0.002-0.004), and cost rounds that refine a good parent at
    another scale or polarity 0.002-0.007 in 6 of 7 (session 17): those do not step.
    """
    higher = [t for t in THRESHOLDS if t > settings["threshold"] + 1e-9]
    return {**settings, "threshold": higher[0]} if higher else dict(settings)


@dataclass
class CheckResult:
    """Parent against new on the held-back blocks."""

    metric: str
    parent_score: float
    new_score: float
    better: bool
    new_postprocess: dict[str, Any]
    by_pixels: bool = False  # the scores tied (within the margin): the pixels decided
    tied: bool = False  # the scores tied (within the margin)


def _pixel_score(model: Any, regions: Sequence[Region]) -> float:
    """The mean balanced accuracy of the foreground probability over the regions' boxes."""
    return float(np.mean([_balanced_accuracy(
        p[1][inner], _fg_truth(model, truth)[inner], np.ones_like(truth[inner], bool))
        for p, truth, inner in regions]))


def score_blocks(parent: Any, new: Any, images: Sequence[np.ndarray],
                 labels: Sequence[np.ndarray], boxes: Mapping[int, Box], device: str,
                 retune: bool = True, prefer: Callable[[dict[str, Any]], float] | None = None,
                 margin: float = 0.0, tune_parent: bool = True, pixel_margin: float = 0.0,
                 blended: bool = False, step_whole: bool = True, noise_z: float = 0.0,
                 retune_z: float = 0.0) -> Generator[Stage, None, CheckResult]:
    """Score both models on the held-back parts only (whole slices when none is held back).

    Slices without a block are left out when any slice has one (from four corrections,
    whole slices are held back and the others were trained on). EM thresholds step up
    (:func:`seen_step_up`; on whole slices only with ``step_whole``).

    Each is predicted as the user would predict (its TTA recommendation). With ``retune``
    each model's thresholds are tuned on the blocks first (the same candidates for both,
    so the comparison stays even, gains within ``retune_z`` standard errors ignored;
    ``prefer``, if given, breaks the new model's ties: see :func:`tune_postprocess`); the
    new model keeps its tuned settings. Without
    ``tune_parent`` the parent keeps its own, as the user has it when the check keeps it (a
    failing parent tuned on one small block rejected a version 12x better on unseen slices).
    Scores closer than ``margin`` (exactly equal when it is 0), and for objects closer than
    ``noise_z`` standard errors of their F1 on the held-back objects (:func:`f1_noise`), are
    a tie that the pixels decide: the balanced accuracy of the foreground probability on
    the blocks. Cells that
    tile the image (``fill``) within a non-zero margin keep the parent (pixel accuracy does
    not see the membrane gaps that merge cells: ISBI rounds won by the pixels lost up to
    0.017), unless the new version is ``blended`` mostly back into the parent (never worse
    than it on the unseen slices in the in-domain rounds measured: models.md, session 17).
    Objects within ``pixel_margin`` of the parent's pixels win the tie (blocks of 1-3 nuclei
    tie 1.000 -> 1.000; the new version was better on the test in 25 of 28: docs/models.md).
    """
    settings = postprocess_settings(parent)
    fill = bool(settings["fill"])
    keep = [i for i in range(len(labels)) if i in boxes] if boxes else list(range(len(labels)))
    images, labels = [images[i] for i in keep], [labels[i] for i in keep]
    bxs = [boxes.get(i) for i in keep]
    p_reg = yield from predict_regions(parent, images, labels, bxs, device)
    n_reg = yield from predict_regions(new, images, labels, bxs, device)
    if retune:
        p_score = tune_postprocess(settings, p_reg, noise_z=retune_z)[1] if tune_parent \
            else _block_score(settings, p_reg)
        n_set, n_score = tune_postprocess(settings, n_reg, prefer=prefer, noise_z=retune_z)
        whole = all(b is not None and _whole(b, lab.shape) for b, lab in zip(bxs, labels))
        if fill and (step_whole or not whole):  # see seen_step_up
            n_set = seen_step_up(n_set)
            n_score = _block_score(n_set, n_reg)
    else:
        n_set = settings
        p_score, n_score = _block_score(settings, p_reg), _block_score(settings, n_reg)
    gain = (p_score - n_score) if fill else (n_score - p_score)
    metric = "adapted Rand error" if fill else "F1"
    if not fill:  # objects: a gap within noise_z standard errors of the F1 is a tie too
        margin = max(margin, noise_z * f1_noise(p_score, n_score, n_objects(p_reg)))
    if decisive(gain, margin):
        return CheckResult(metric, p_score, n_score, gain > 0, n_set)
    if fill and margin > 0:  # a good parent of tiling cells: a tie keeps it, or its blend
        return CheckResult(metric, p_score, n_score, blended, n_set, tied=True)
    p_pix, n_pix = _pixel_score(parent, p_reg), _pixel_score(new, n_reg)
    return CheckResult(metric, p_score, n_score, bool(n_pix > p_pix - pixel_margin), n_set,
                       by_pixels=True, tied=True)
