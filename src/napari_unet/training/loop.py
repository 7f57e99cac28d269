"""One round of the human-in-the-loop, the one implementation behind dock, CLI and benchmarks.

``result = yield from finetune_round(parent, images, labels, config)`` takes the slices the
user corrected and

1. **prepares** them (2D slices, channels first) and holds back a block of each one
   (:func:`holdout_box`) that training never sees;
2. **checks the polarity**: the parent predicts the corrected slices as they are and with
   the gray values inverted; if the inverted images agree clearly better with the
   corrections (a fluorescence starter on dark nuclei over a bright background), the new
   version inverts its input (``Normalization.invert``);
3. **anchors** on uncorrected slices of the same data only where the parent already
   segments the corrected slices well (anchoring a wrong parent holds it to its errors);
4. **trains** (:func:`napari_unet.training.train.fine_tune`, AdamW with warm-up, steps scaled to the
   amount of corrected data);
5. **re-tunes the post-processing** of both the parent and the new version on the held-back
   blocks, which are ground truth the new version never trained on; when the round refined
   a good parent, the settings within the blocks' margin that best reproduce the parent's
   labels on the anchor slices win (the new version's probabilities shift: a threshold
   kept from the parent merged cells on the ISBI stack);
6. **compares** the two there and reports, e.g. "on your corrections (held-back parts):
   F1 0.41 -> 0.83". A version that is not better is returned with ``accepted=False``:
   callers keep the parent current and say so.

Yields ``str`` stage messages and :class:`~napari_unet.training.train.TrainEvent` steps.
"""

from __future__ import annotations

import copy
import datetime as _dt
import time
from collections.abc import Generator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from .. import __version__
from ..inference.inputs import as_image_view
from ..inference.postprocess import postprocess_settings
from ..model import UNet
from .anchoring import Anchors, anchor_predictions, prepare_anchors
from .selfcheck import (
    CheckResult,
    anchor_agreement,
    holdout_box,
    parent_quality,
    pixel_agreement,
    predict_slices,
    score_blocks,
)
from .train import TrainConfig, annotated_slices, fine_tune


def _round_train_defaults() -> TrainConfig:
    return TrainConfig(steps=0, lr=5e-4, optimizer="adamw", warmup=0.1, batch_size=2, tile=128)


@dataclass
class RoundConfig:
    """Settings of one fine-tuning round. The defaults are what the dock and CLI use.

    Parameters
    ----------
    train : TrainConfig
        The training loop's settings; ``train.steps == 0`` means :meth:`steps_for`.
    steps_base, steps_per_slice, steps_max : int
        Automatic step count: ``min(steps_max, steps_base + steps_per_slice * k)`` for
        ``k`` corrected slices (a megapixel slice counts as four).
    holdout : float
        Area fraction of each corrected slice held back for the self-check (0: none; the
        check then scores the trained pixels themselves and says so).
    polarity : str
        ``"auto"`` (invert the input when the corrections say so), ``"keep"`` or
        ``"invert"`` (flip the parent's polarity).
    start : str
        ``"parent"`` (fine-tune) or ``"scratch"`` (a new network of the parent's shape, for
        data far from every starter).
    retune : bool
        Re-tune the post-processing thresholds on the held-back blocks.
    n_anchors : int
        Uncorrected slices of the same stack that anchor the parent's predictions.
    anchor_min_f1, anchor_max_rand : float
        Anchor only when the parent (with the chosen polarity) already segments the
        corrected slices this well: F1 at least ``anchor_min_f1`` (objects), adapted Rand
        error at most ``anchor_max_rand`` (cells that fill the image).
    invert_margin : float
        How much better the inverted input must agree for ``polarity="auto"`` to invert.
    good_parent_lr : float
        Learning-rate factor when the parent already segments the corrected slices well
        (the anchoring criterion): a good model needs small steps; at the full rate a round
        on the sample data made the nuclei starter worse (docs/models.md).
    refine_margin_f1, refine_margin_rand : float
        When the parent already segments the corrections well, scores on the held-back
        blocks closer than this (F1, or adapted Rand error) are a tie, which the pixels
        decide (:func:`~napari_unet.training.selfcheck.score_blocks`): a few small blocks
        are noisy (in-domain nuclei: a +0.008 block gain came with test F1 0.959 -> 0.953).
    """

    train: TrainConfig = field(default_factory=_round_train_defaults)
    steps_base: int = 100
    steps_per_slice: int = 40
    steps_max: int = 260
    holdout: float = 0.25
    polarity: str = "auto"
    start: str = "parent"
    retune: bool = True
    n_anchors: int = 3
    anchor_min_f1: float = 0.7
    anchor_max_rand: float = 0.1
    invert_margin: float = 0.05
    good_parent_lr: float = 0.2
    refine_margin_f1: float = 0.01
    refine_margin_rand: float = 0.005

    def __post_init__(self) -> None:
        if self.polarity not in ("auto", "keep", "invert"):
            raise ValueError(f"polarity must be 'auto', 'keep' or 'invert', got {self.polarity!r}")
        if self.start not in ("parent", "scratch"):
            raise ValueError(f"start must be 'parent' or 'scratch', got {self.start!r}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")

    def steps_for(self, slice_sizes: Sequence[int]) -> int:
        """Steps for corrected slices of these pixel counts (``train.steps`` if set)."""
        if self.train.steps > 0:
            return int(self.train.steps)
        k = sum(max(1.0, n / 2**18) for n in slice_sizes)
        return int(min(self.steps_max, self.steps_base + self.steps_per_slice * k))


@dataclass
class RoundReport:
    """What a round did and how the new version compares with its parent."""

    metric: str  # "F1" (higher is better) or "adapted Rand error" (lower is better)
    parent_score: float
    new_score: float
    accepted: bool
    held_back: bool
    inverted: bool
    anchored: int
    steps: int
    seconds: float
    n_slices: int
    loss_first: float
    loss_last: float
    postprocess: dict[str, Any]
    regime: str = "adapt"  # "refine": the parent already segments the corrections well
    by_pixels: bool = False  # the scores tied within the margin; the pixels decided

    def summary(self) -> str:
        """One line for the dock's status and the CLI, e.g. "F1 0.41 -> 0.83"."""
        where = "held-back parts of your corrections" if self.held_back else \
            "your corrections (trained on; no part held back)"
        verdict = "better" if self.accepted else "NOT better: keep the parent"
        if self.by_pixels:
            verdict += (": a tie, decided by the pixels" if self.accepted else
                        ": a tie, and the pixels did not favour it")
        extra = "; input inverted (dark objects on bright)" if self.inverted else ""
        return (f"on {where}: {self.metric} {self.parent_score:.3f} -> {self.new_score:.3f} "
                f"({verdict}){extra}")

    def to_dict(self) -> dict[str, Any]:
        """Plain-type dict for the model record."""
        return asdict(self)


@dataclass
class RoundResult:
    """The new version, whether it beat its parent, and the report."""

    model: UNet
    accepted: bool
    report: RoundReport


def corrected_pairs(images: Any, labels: Any, slices: Sequence[int] | None,
                    channel_axis: int | None, in_channels: int,
                    ) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """The corrected 2D slices as ``(C, Y, X)`` float32 images and ``(Y, X)`` labels.

    ``images``/``labels`` are one image or stack each, or two lists of 2D images.
    ``slices`` defaults to every slice holding labels.
    """
    if isinstance(images, (list, tuple)) != isinstance(labels, (list, tuple)):
        raise ValueError("pass images and labels both as arrays or both as lists")
    pairs = list(zip(images, labels, strict=True)) if isinstance(images, (list, tuple)) \
        else [(images, labels)]
    imgs, labs = [], []
    for img, lab in pairs:
        view, lab = as_image_view(img, in_channels, channel_axis), np.asarray(lab)
        expected = (view.n_slices, *view.yx) if view.is_stack else view.yx
        if lab.shape != tuple(expected):
            raise ValueError(f"labels shape {lab.shape} differs from the image's spatial shape "
                             f"{tuple(expected)}")
        lab3 = lab if view.is_stack else lab[None]
        for z in range(view.n_slices):
            imgs.append(view.slice(z))
            labs.append(lab3[z])
    zs = [int(z) for z in slices] if slices is not None else \
        annotated_slices(np.stack(labs)) if len({x.shape for x in labs}) == 1 else \
        [i for i, x in enumerate(labs) if np.any(x)]
    bad = [z for z in zs if not 0 <= z < len(labs)]
    if bad:
        raise ValueError(f"slice {bad[0]} is out of range for {len(labs)} slices")
    if not zs:
        raise ValueError("no corrected slice: paint labels on at least one slice first")
    return [imgs[z] for z in zs], [labs[z] for z in zs], zs


def pick_slices(n_slices: int, exclude: Sequence[int], count: int = 3) -> list[int]:
    """Up to ``count`` evenly spaced slice indices outside ``exclude`` (anchor slices)."""
    free = [z for z in range(n_slices) if z not in set(exclude)]
    if len(free) <= count:
        return free
    return [free[int(round(i))] for i in np.linspace(0, len(free) - 1, count)]


def _new_start(parent: UNet, cfg: RoundConfig) -> UNet:
    if cfg.start == "scratch":
        import torch

        torch.manual_seed(cfg.train.seed)
        model = UNet(**{k: v for k, v in parent.config.to_dict().items()})
        model.record = {"postprocess": dict(parent.record.get("postprocess") or {}),
                        "predict": dict(parent.record.get("predict") or {}),
                        "expand_labels": parent.record.get("expand_labels", 0)}
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
    str or TrainEvent
        Stage messages, then one event per training step.

    Returns
    -------
    RoundResult
    """
    cfg = config or RoundConfig()
    t0 = time.perf_counter()
    imgs, labs, zs = corrected_pairs(images, labels, slices, channel_axis, parent.in_channels)
    boxes = {i: b for i, lab in enumerate(labs)
             if (b := holdout_box(lab.shape, i, cfg.holdout)) is not None}
    dev = cfg.train.device
    yield f"checking {parent.record.get('name', 'the model')} on {len(imgs)} corrected slice(s)"
    start = _new_start(parent, cfg)
    flip = cfg.polarity == "invert"
    parent_probs = yield from predict_slices(parent, imgs, dev)
    agree = pixel_agreement(parent, parent_probs, labs, boxes)
    if cfg.polarity == "auto" and parent.in_channels == 1 and cfg.start == "parent":
        yield "checking the polarity (bright or dark objects)"
        flipped = _with_polarity(start, not start.config.normalization.get("invert", False))
        flipped_probs = yield from predict_slices(flipped, imgs, dev)
        agree_inv = pixel_agreement(flipped, flipped_probs, labs, boxes)
        flip = agree_inv > agree + cfg.invert_margin
        if flip:
            parent_probs = flipped_probs
    model = _with_polarity(start, not start.config.normalization.get("invert", False)) \
        if flip else start
    quality = parent_quality(parent, parent_probs, labs)
    good = quality <= cfg.anchor_max_rand if postprocess_settings(parent)["fill"] \
        else quality >= cfg.anchor_min_f1
    use_anchors = cfg.start == "parent" and good and anchors
    train_cfg = copy.deepcopy(cfg.train)
    train_cfg.steps = cfg.steps_for([lab.size for lab in labs])
    if not use_anchors:
        train_cfg.anchor_weight = 0.0
    if good and cfg.start == "parent":
        train_cfg.lr *= cfg.good_parent_lr
    losses: list[float] = []
    yield f"training {train_cfg.steps} steps"
    prepared = None
    if use_anchors and train_cfg.anchor_weight > 0:
        prepared = Anchors([], [])
        for i, a in enumerate(anchors, 1):  # one at a time: a round stops between them
            yield f"anchoring on uncorrected slice {i}/{len(anchors)}"
            one = prepare_anchors(model, [a if a.ndim == 3 else a[None]], 0, dev)
            prepared.images += one.images
            prepared.probs += one.probs
    gen = fine_tune(model, imgs, labs, train_cfg, channel_axis=0, exclude=boxes, resume=resume,
                    anchors=prepared)
    for ev in gen:
        losses.append(ev.loss)
        yield ev
    model.eval()  # fine_tune trained ``model`` in place
    yield "re-tuning the post-processing and comparing with the parent"
    prefer = None
    if prepared is not None and prepared.images and cfg.retune:
        yield "comparing with the parent on the uncorrected slices"
        prefer = anchor_agreement(postprocess_settings(parent), prepared.probs,
                                  anchor_predictions(model, prepared, dev))
    refine = good and cfg.start == "parent"  # a good parent stays unless clearly beaten
    margin = (cfg.refine_margin_rand if postprocess_settings(parent)["fill"]
              else cfg.refine_margin_f1) if refine else 0.0
    check: CheckResult = yield from score_blocks(parent, model, imgs, labs, boxes, dev,
                                                 cfg.retune, prefer, margin)
    accepted = check.better
    n = max(1, len(losses) // 10)
    report = RoundReport(
        metric=check.metric, parent_score=check.parent_score, new_score=check.new_score,
        accepted=accepted, held_back=bool(boxes), inverted=flip, anchored=len(prepared.images)
        if prepared is not None else 0, steps=len(losses), seconds=time.perf_counter() - t0,
        n_slices=len(imgs), loss_first=float(np.mean(losses[:n])) if losses else float("nan"),
        loss_last=float(np.mean(losses[-n:])) if losses else float("nan"),
        postprocess=check.new_postprocess, regime="refine" if good else "adapt",
        by_pixels=check.by_pixels)
    _describe(model, parent, report, zs, name, cfg.start)
    return RoundResult(model, accepted, report)


def _describe(model: UNet, parent: UNet, report: RoundReport, zs: list[int],
              name: str | None, start: str) -> None:
    """Replace the parent's description, data and scores by the new version's own."""
    old = parent.record
    parent_name = old.get("name") or old.get("source")
    history = list(old.get("history") or []) + [{
        "parent": parent_name, "slices": zs, "self_check": report.to_dict(),
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}]
    keep = {k: old[k] for k in ("predict", "expand_labels") if k in old}
    model.record = {
        **keep, **{k: v for k, v in model.record.items()
                   if k in ("data_shapes", "steps", "final_loss", "train_config", "date",
                            "package_version", "anchor_slices", "expand_labels")},
        "name": name or f"{parent_name}-ft",
        "annotated_slices": list(zs),
        "parent": parent_name,
        "description": (f"Fine-tuned from {parent_name} on {report.n_slices} corrected "
                        f"slice(s) {zs}" + (" (a new network, started from scratch)"
                                            if start == "scratch" else "")),
        "data": f"{report.n_slices} corrected slice(s) of the user's data: {zs}",
        "postprocess": report.postprocess,
        "self_check": report.to_dict(),
        "metrics": {"self_check_" + ("f1" if report.metric == "F1" else "adapted_rand"):
                    report.new_score, "self_check_parent": report.parent_score},
        "parent_licence": old.get("licence"),
        "history": history,
        "package_version": __version__,
    }
