"""One round of the human-in-the-loop, the one implementation behind dock, CLI and benchmarks.

``result = yield from finetune_round(parent, images, labels, config)`` takes the slices the
user corrected and

1. **prepares** them (2D slices, channels first) and holds back a block of each one
   (:func:`holdout_box`) that training never sees;
2. **checks the polarity**: the parent predicts the corrected slices as they are and with
   the gray values inverted; if the inverted images agree clearly better with the
   corrections (a fluorescence starter on dark nuclei over a bright background), the new
   version inverts its input (``Normalization.invert``); then, likewise, whether a smoothed
   input segments them clearly better (noisy images: :mod:`.denoise`) and at which input
   scale (:mod:`.scale`);
3. **anchors** on uncorrected slices of the same data only where the parent already
   segments the corrected slices well (anchoring a wrong parent holds it to its errors);
4. **trains** (:func:`napari_unet.training.train.fine_tune`, AdamW with warm-up, steps
   scaled to the corrected data); refining a good EM parent at its input, blends back;
5. **re-tunes the post-processing** of the new version (and of a good parent) on the held-back
   blocks, ground truth it never trained on; refining a good parent, the settings within the
   blocks' margin that best reproduce the parent's labels on the anchor slices win;
6. **compares** the two there and reports ("on your corrections (held-back parts): F1 0.41
   -> 0.83"); one not better has ``accepted=False``: callers keep the parent and say so.

Yields :class:`~napari_unet.jobs.Stage` messages and :class:`~.train.TrainEvent` steps.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Generator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..inference.postprocess import postprocess_settings
from ..inference.rescale import input_scale, object_diameter
from ..jobs import Stage
from ..model import UNet
from ..model_record import ModelRecord
from .agreement import anchor_agreement
from .anchoring import Anchors, anchor_predictions, anchors_one_by_one, blend_weights
from .denoise import candidate_sigmas, pick_smoothing, smoothing, with_smoothing
from .pairs import corrected_pairs
from .report import RoundReport, RoundResult, describe_version, loss_ends
from .round_config import RoundConfig
from .scale import (
    candidate_scales,
    measured_scale,
    pick_scale,
    to_scale,
    with_scale,
)
from .selfcheck import (
    CheckResult,
    holdout_boxes,
    parent_quality,
    pixel_agreement,
    predict_slices,
    score_blocks,
    trainable,
)
from .train import TrainConfig, fine_tune

__all__ = ["RoundConfig", "finetune_round"]


def _new_start(parent: UNet, cfg: RoundConfig) -> UNet:
    if cfg.start == "scratch":
        import torch

        torch.manual_seed(cfg.train.seed)
        model = UNet(**{k: v for k, v in parent.config.to_dict().items()})
        rec = ModelRecord.of(parent)
        model.record = ModelRecord(postprocess=dict(rec.postprocess or {}),
                                   predict=dict(rec.predict or {}),
                                   expand_labels=rec.expand_labels or 0,
                                   object_diameter=rec.object_diameter).to_dict()
        return model
    return copy.deepcopy(parent)


def _with_polarity(model: UNet, invert: bool) -> UNet:
    out = copy.deepcopy(model)
    out.config.normalization = {**out.config.normalization, "invert": invert}
    return out


def finetune_round(
    parent: UNet, images: Any, labels: Any, config: RoundConfig | None = None, *,
    slices: Sequence[int] | None = None, channel_axis: int | None = None,
    anchors: Sequence[np.ndarray] | None = None, name: str | None = None,
    resume: str | None = None,
) -> Generator[Any, None, RoundResult]:
    """Fine-tune a copy of ``parent`` on the corrected slices, check it, and report.

    Parameters
    ----------
    parent : UNet
        The current version; never modified.
    images, labels : array-like or list of array-like
        The user's image (2D, stack, with channels) and its labels, or lists of 2D images.
    config : RoundConfig, optional
        Settings (defaults: :class:`RoundConfig`).
    slices : sequence of int, optional
        The corrected slices (default: every slice holding labels).
    channel_axis : int, optional
        Channel axis of ``images``.
    anchors : sequence of numpy.ndarray, optional
        Uncorrected 2D slices of the same data (``(C, Y, X)`` with ``channel_axis=0`` given
        as ``channel_axis``; plain ``(Y, X)`` otherwise).
    name : str, optional
        The new version's name (``record["name"]``).
    resume : str, optional
        A training checkpoint to continue from (:func:`napari_unet.training.train.fine_tune`).

    Yields
    ------
    Stage or TrainEvent
        Stage messages, then one event per training step.

    Returns
    -------
    RoundResult
    """
    cfg = config or RoundConfig()
    t0 = time.perf_counter()
    fill = bool(postprocess_settings(parent)["fill"])
    imgs, labs, zs = corrected_pairs(images, labels, slices, channel_axis, parent.in_channels,
                                     1 if fill else 2, cfg.train.ignore_label)
    boxes = holdout_boxes(labs, cfg.holdout, cfg.holdout_whole_from, objects=not fill)
    yield Stage(f"checking {parent.record.get('name', 'the model')} on {len(imgs)} corrected slice(s)")
    model, flip, rescaled, good, as_is = yield from _choose_start(parent, imgs, labs, boxes, cfg)
    refine = good and cfg.start == "parent"  # a good parent stays unless clearly beaten
    smoothed = smoothing(model) != smoothing(parent)
    t_imgs, t_labs, t_boxes, t_anchors = to_scale(input_scale(model), imgs, labs, boxes,
                                                  anchors)
    share = cfg.refine_blend_rand if fill else cfg.refine_blend_f1
    blend = refine and share < 1 and not (flip or rescaled or smoothed)  # the parent's input
    anchor = bool(refine and anchors) and (fill or cfg.anchors_objects([x.size for x in t_labs]))
    train_cfg = _train_config(cfg, t_labs, refine, anchor, fill, blend)
    yield Stage(f"training {train_cfg.steps} steps")
    # the parent's weights with the round's new input: what training must beat
    plain = copy.deepcopy(model) if (flip or rescaled or smoothed) and cfg.untrained_duel \
        and not fill else None
    prepared = None
    if train_cfg.anchor_weight > 0 and t_anchors:
        prepared = yield from anchors_one_by_one(model, t_anchors, cfg.train.device)
    losses, n_trained = yield from _train(model, t_imgs, t_labs, t_boxes, train_cfg, resume,
                                          prepared)
    if blend:
        yield Stage(f"blending {1 - share:.0%} of the parent's weights back in")
        blend_weights(model, parent, share)
    untrained = plain is not None and (yield from _untrained_wins(model, plain, imgs, labs,
                                                                   boxes, cfg))
    model = plain if untrained else model
    check = yield from _check(parent, model, imgs, labs, boxes, prepared, refine,
                              replace(cfg, retune=cfg.retune and not untrained), blend, as_is)
    first, last = loss_ends(losses)
    report = RoundReport(
        metric=check.metric, parent_score=check.parent_score, new_score=check.new_score,
        accepted=check.better, held_back=bool(boxes), inverted=flip,
        anchored=len(prepared.images) if prepared is not None else 0, steps=len(losses),
        seconds=time.perf_counter() - t0, n_slices=len(imgs), loss_first=first,
        loss_last=last, postprocess=check.new_postprocess,
        regime="refine" if good else "adapt", by_pixels=check.by_pixels, tied=check.tied,
        blended=blend,
        scale=input_scale(model), object_diameter=object_diameter(labs), rescaled=rescaled,
        whole_slices=len(imgs) - n_trained, smooth=smoothing(model), smoothed=smoothed,
        untrained=untrained)
    describe_version(model, parent, report, zs, name, cfg.start)
    return RoundResult(model, check.better, report)


def _choose_start(parent: UNet, imgs: list[np.ndarray], labs: list[np.ndarray],
                  boxes: dict[int, Any], cfg: RoundConfig,
                  ) -> Generator[Any, None, tuple[UNet, bool, bool, bool, bool]]:
    """The network to train, from the parent's predictions of the corrected slices.

    Returns it (with the polarity, smoothing and input scale the corrections call for),
    whether its input is inverted, whether it was rescaled, whether the parent already
    segments the corrections well with that input (the *refine* regime), and whether it
    does so with its own.
    """
    own = yield from predict_slices(parent, imgs, cfg.train.device)
    model, flip, probs = yield from _pick_polarity(parent, _new_start(parent, cfg), imgs, labs,
                                                   boxes, own, cfg)
    polar, polar_probs = model, probs
    model, probs = yield from _pick_smoothing(model, imgs, labs, probs, cfg)
    model, quality, rescaled = yield from _pick_scale(parent, model, imgs, labs, probs, cfg)
    smoothed = smoothing(model) != smoothing(parent)
    if cfg.regime_input == "polarity" or (cfg.regime_input == "unsmoothed" and smoothed):
        # the parent with the polarity alone (unsmoothed: the smoothing comes before the scale)
        quality = parent_quality(polar, polar_probs, labs)
    good = _is_good(parent, quality, cfg)
    if flip or rescaled or smoothed:
        return model, flip, rescaled, good, _is_good(parent, parent_quality(parent, own, labs),
                                                     cfg)
    return model, flip, rescaled, good, good


def _train(model: UNet, imgs: list[np.ndarray], labs: list[np.ndarray], boxes: dict[int, Any],
           train_cfg: TrainConfig, resume: str | None, anchors: Anchors | None,
           ) -> Generator[Any, None, tuple[list[float], int]]:
    """Train ``model`` in place on the slices not wholly held back.

    Returns the corrections' loss of each step (without the anchoring term, which starts near 0)
    and the number of slices trained on.
    """
    losses: list[float] = []
    imgs, labs, boxes = trainable(imgs, labs, boxes)
    for ev in fine_tune(model, imgs, labs, train_cfg, channel_axis=0, exclude=boxes,
                        resume=resume, anchors=anchors):
        losses.append(ev.corrections_loss)
        yield ev
    model.eval()
    return losses, len(imgs)


def _check(parent: UNet, model: UNet, imgs: list[np.ndarray], labs: list[np.ndarray],
           boxes: dict[int, Any], anchors: Anchors | None, refine: bool, cfg: RoundConfig,
           blended: bool = False, as_is: bool = True) -> Generator[Any, None, CheckResult]:
    """Re-tune the post-processing and compare the new version with its parent.

    The parent is the one the user keeps: when it is good only with the round's new input
    (``as_is`` false: inverted, smoothed or resampled), it is checked as a failing parent,
    with its own thresholds and no margin (a smoothed low-contrast EM round tied a parent
    tuned on the block, 0.013 -> 0.013, and kept one whose test error was 0.699).
    """
    yield Stage("re-tuning the post-processing and comparing with the parent")
    prefer = None
    if anchors is not None and anchors.images and cfg.retune:
        yield Stage("comparing with the parent on the uncorrected slices")
        prefer = anchor_agreement(postprocess_settings(parent), anchors.probs,
                                  anchor_predictions(model, anchors, cfg.train.device))
    fill = postprocess_settings(parent)["fill"]
    good = refine and as_is
    margin = (cfg.refine_margin_rand if fill else cfg.refine_margin_f1) if good else 0.0
    return (yield from score_blocks(parent, model, imgs, labs, boxes, cfg.train.device,
                                    cfg.retune, prefer, margin, tune_parent=good,
                                    pixel_margin=cfg.tie_pixel_margin, blended=blended,
                                    noise_z=cfg.tie_noise_z, retune_z=cfg.retune_noise_z,
                                    step_whole=blended or not refine))


def _untrained_wins(trained: UNet, plain: UNet, imgs: list[np.ndarray], labs: list[np.ndarray],
                    boxes: dict[int, Any], cfg: RoundConfig) -> Generator[Any, None, bool]:
    """Whether the parent's weights with the round's new input alone beat the trained ones.

    On the held-back blocks, the untrained weights keep the parent's stored thresholds (tuned
    on many images, not on a block) and the trained ones are tuned there; a tie goes to the
    untrained weights unless the trained pixels are better by ``tie_pixel_margin``. The
    blocks come from the images trained on, so a trained version that cannot beat the weights
    it started from there has learned nothing that carries (half-scale nuclei, adapted at x3
    on a dim image: test F1 0.63 against 0.79 for the rescaled parent; docs/models.md,
    session 22). Objects only: on cells that tile the image the trained version's
    thresholds step up one step on blocks (:func:`seen_step_up`), which makes the blocks
    favour the untrained weights (EM at half scale, k = 1: 0.045 -> 0.058 with the duel).
    """
    yield Stage("comparing with the new input alone (the parent's weights, untrained)")
    duel = yield from score_blocks(plain, trained, imgs, labs, boxes, cfg.train.device,
                                   cfg.retune, tune_parent=False,
                                   pixel_margin=-cfg.tie_pixel_margin, noise_z=cfg.tie_noise_z,
                                   retune_z=cfg.retune_noise_z, step_whole=False)
    return not duel.better


def _pick_polarity(parent: UNet, start: UNet, imgs: list[np.ndarray], labs: list[np.ndarray],
                   boxes: dict[int, Any], parent_probs: list[np.ndarray], cfg: RoundConfig,
                   ) -> Generator[str, None, tuple[UNet, bool, list[np.ndarray]]]:
    """``start`` with its input inverted when the corrections agree clearly better so."""
    flip = cfg.polarity == "invert"
    if cfg.polarity == "auto" and parent.in_channels == 1 and cfg.start == "parent":
        yield Stage("checking the polarity (bright or dark objects)")
        agree = pixel_agreement(parent, parent_probs, labs, boxes)
        flipped = _with_polarity(start, not start.config.normalization.get("invert", False))
        flipped_probs = yield from predict_slices(flipped, imgs, cfg.train.device)
        flip = pixel_agreement(flipped, flipped_probs, labs, boxes) > agree + cfg.invert_margin
        if flip:
            return flipped, True, flipped_probs
    if flip:
        return _with_polarity(start, not start.config.normalization.get("invert", False)), \
            True, parent_probs
    return start, False, parent_probs


def _pick_smoothing(model: UNet, imgs: list[np.ndarray], labs: list[np.ndarray],
                    probs: list[np.ndarray], cfg: RoundConfig,
                    ) -> Generator[Any, None, tuple[UNet, list[np.ndarray]]]:
    """``model`` smoothing its input when the parent segments the corrections clearly better so.

    Returns it and the parent's predictions of the corrected slices with that input. Cells
    that tile the image at another size than the parent's are left to the input scale: a
    smoothed input there stood in for the resampling and blurred the thin membranes (EM at
    half scale, k = 1: 0.045 -> 0.059; docs/models.md, session 18).
    """
    fill = bool(postprocess_settings(model)["fill"])
    if cfg.smooth.mode != "auto" or cfg.start != "parent" or (
            fill and measured_scale(model, labs, cfg.scale) is not None):
        return model, probs
    current = smoothing(model)
    scored, all_probs = [(current, parent_quality(model, probs, labs))], {current: probs}
    for run in candidate_sigmas(current, cfg.smooth):
        last = scored[0][1]
        for s in run:
            yield Stage(f"checking the model on smoothed input (Gaussian of {s:g} px)")
            all_probs[s] = yield from predict_slices(with_smoothing(model, s), imgs,
                                                     cfg.train.device)
            q = parent_quality(model, all_probs[s], labs)
            scored.append((s, q))
            if (q >= last) if fill else (q <= last):  # no better than the step before
                break
            last = q
    chosen = pick_smoothing(scored, fill, cfg.smooth)
    if chosen == current:
        return model, probs
    return with_smoothing(model, chosen), all_probs[chosen]


def _pick_scale(parent: UNet, model: UNet, imgs: list[np.ndarray], labs: list[np.ndarray],
                probs: list[np.ndarray], cfg: RoundConfig,
                ) -> Generator[Any, None, tuple[UNet, float, bool]]:
    """``model`` at the input scale the corrections' object size calls for, if any.

    Returns it, the parent's quality on the corrections at that scale, and whether the
    scale changed.

    When fine-tuning with ``scale.mode == "auto"``, the parent predicts the corrected slices
    at each candidate scale (:func:`~napari_unet.training.scale.candidate_scales`) and the
    first within the margin of the best is taken: the measured scale first, unless the
    parent already segments the corrections well at its own scale, which then comes first
    (in-domain nuclei of 31 px, which the starter learned among others, went to x0.6 and
    lost 0.018 F1 on the test images).
    """
    scale = measured_scale(model, labs, cfg.scale)
    q_current = parent_quality(model, probs, labs)
    if scale is None:
        return model, q_current, False
    if cfg.start != "parent" or cfg.scale.mode != "auto":
        return with_scale(model, scale), q_current, True
    current = input_scale(model)
    scored = [(current, q_current)]
    for s in candidate_scales(scale, current)[:-1]:
        yield Stage(f"checking the model at input scale {s:g} "
                    f"(objects of {object_diameter(labs):.0f} px)")
        probs_s = yield from predict_slices(with_scale(model, s), imgs, cfg.train.device)
        scored.insert(-1, (s, parent_quality(model, probs_s, labs)))
    if _is_good(parent, q_current, cfg):  # a good parent keeps its scale unless clearly beaten
        scored.reverse()
    chosen = pick_scale(scored, postprocess_settings(parent)["fill"], cfg.scale)
    quality = dict(scored)[chosen]
    if chosen == current:
        return model, quality, False
    return with_scale(model, chosen), quality, True


def _is_good(parent: UNet, quality: float, cfg: RoundConfig) -> bool:
    """Whether the parent already segments the corrections well (the refine regime)."""
    fill = postprocess_settings(parent)["fill"]
    return quality <= cfg.anchor_max_rand if fill else quality >= cfg.anchor_min_f1


def _train_config(cfg: RoundConfig, labs: list[np.ndarray], refine: bool, anchor: bool,
                  fill: bool = False, blend: bool = False) -> TrainConfig:
    """The round's training settings: steps for the data, a small rate to refine a good parent.

    ``fill`` (cells tile the image, every crop is full of objects): no object-centred crops
    (with them, low contrast EM after one corrected slice went from 0.091 to 0.179). Adapting,
    the input layer stays (tissue F1 0.649 -> 0.659 at k = 1, low-contrast EM 0.163 -> 0.113 at
    k = 4), and refining EM cells (at most 0.001 either way, a third less time); refining
    objects, it cost the sample data's round its gain (docs/models.md, session 16). With
    ``blend`` (the weights go back towards the parent's), ``blend_steps`` of the steps.
    """
    train_cfg = copy.deepcopy(cfg.train)
    train_cfg.steps = cfg.steps_for([lab.size for lab in labs])
    if blend and cfg.train.steps <= 0:
        train_cfg.steps = max(1, round(train_cfg.steps * cfg.blend_steps))
    if fill:
        train_cfg.object_crops = 0.0
    train_cfg.anchor_weight = train_cfg.anchor_weight if anchor else 0.0
    if refine:
        train_cfg.lr *= cfg.good_parent_lr
    if train_cfg.freeze == "none" and (fill or not refine):
        train_cfg.freeze = cfg.refine_freeze_rand if refine else cfg.adapt_freeze
    return train_cfg
