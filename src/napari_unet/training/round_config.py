"""Settings of one round of the loop (:func:`napari_unet.training.loop.finetune_round`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .denoise import SmoothConfig
from .scale import ScaleConfig
from .train_config import FREEZE, TrainConfig


def _round_train_defaults() -> TrainConfig:
    # a third of the crops centred on a corrected object: corrections are often sparse (a few
    # nuclei in a large slice); tissue F1 0.638/0.615 -> 0.652/0.652 at k = 1/2 (docs/models.md)
    return TrainConfig(steps=0, lr=5e-4, optimizer="adamw", warmup=0.1, batch_size=2, tile=128,
                       object_crops=1 / 3)


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
    holdout_whole_from : int
        With this many corrected slices or more, the same fraction of whole slices is held
        back instead (an image the new version never saw; 0: never).
    polarity : str
        ``"auto"`` (invert the input when the corrections say so), ``"keep"`` or
        ``"invert"`` (flip the parent's polarity).
    start : str
        ``"parent"`` (fine-tune) or ``"scratch"`` (a new network of the parent's shape, for
        data far from every starter).
    retune : bool
        Re-tune the post-processing thresholds on the held-back blocks.
    anchor_below_slices_f1 : float
        Refining a good parent of objects, anchor only while the corrections amount to fewer
        than this many slices (as :meth:`steps_for` counts them; default: at every amount).
        At 2, shifted nuclei gained (scale2x k = 2 / 4: 0.788 / 0.768 anchored, 0.793 / 0.801
        not; blur_noise 0.666 / 0.661 and 0.663 / 0.680) but the in-domain loop lost (F1
        0.962 -> 0.957 after three rounds, effort 10.0 -> 12.7 objects per image), so it is
        off (docs/models.md, session 21). Cells that tile the image always anchor (inverted
        noisy EM, k = 4: 0.044 anchored, 0.073 not).
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
    untrained_duel : bool
        A round on objects that changed the input (polarity, scale, smoothing) keeps the
        parent's weights with that input when training does not beat them on the held-back
        blocks (half-scale nuclei k = 4: 0.629 -> 0.785; docs/models.md, session 22).
    scale : ScaleConfig
        How the new version's input scale is picked (objects of the user's size resampled
        to the size the network learned; :mod:`napari_unet.training.scale`).
    refine_margin_f1, refine_margin_rand : float
        When the parent already segments the corrections well, scores on the held-back
        blocks closer than this (F1, or adapted Rand error) are a tie, which the pixels
        decide (:func:`~napari_unet.training.selfcheck.score_blocks`): a few small blocks
        are noisy (in-domain nuclei: a +0.008 block gain came with test F1 0.959 -> 0.953).
    tie_noise_z : float
        Objects: F1 scores closer than this many standard errors of their difference on the
        held-back objects (``sqrt((Fp (1 - Fp) + Fn (1 - Fn)) / n)``) are a tie too (blocks
        of 2-9 nuclei; session 19: two rejected rounds 0.11 and 0.08 better on the test,
        whose pixels were better, are accepted at 1.5; 0: off).
    retune_noise_z : float
        Objects: a re-tuned threshold must also beat the parent's on the held-back blocks
        by this many standard errors of the F1 gain (0: off, the default). Session 20 at
        1.5: tissue k = 4 0.746 -> 0.759 and blur_noise k = 4 0.655 -> 0.684, but one
        brightfield round 0.855 -> 0.541, whose refined weights needed the higher
        thresholds a small block gain had found (docs/models.md).
    tie_pixel_margin : float
        In a tie on objects the new version wins unless its pixels are worse by this much.
    adapt_freeze, refine_freeze_rand : str
        ``TrainConfig.freeze`` (when ``train.freeze`` is ``"none"``) adapting a parent that
        fails on the corrections, and refining a good one of cells that tile the image.
    refine_blend_f1, refine_blend_rand : float
        Refining a good parent at its own input (scale, polarity), the new weights are this
        share of the trained ones, the rest the parent's (:func:`~.anchoring.blend_weights`; 1: off).
    blend_steps : float
        Share of the automatic steps such a round trains (in-domain EM, k = 4: 208 steps
        instead of 260, the same test error).
    regime_input : str
        Which parent decides the regime (refine or adapt): ``"unsmoothed"`` (with the
        polarity and the input scale the round picked, but not its smoothing: a smoothed
        input is one the parent never learned, so its weights must adapt to it), ``"all"``
        (with every new input) or ``"polarity"`` (neither smoothed nor resampled).
    """

    train: TrainConfig = field(default_factory=_round_train_defaults)
    steps_base: int = 100
    steps_per_slice: int = 40
    steps_max: int = 260
    holdout: float = 0.25
    holdout_whole_from: int = 4
    polarity: str = "auto"
    start: str = "parent"
    retune: bool = True
    anchor_below_slices_f1: float = float("inf")
    n_anchors: int = 3
    anchor_min_f1: float = 0.7
    anchor_max_rand: float = 0.1
    invert_margin: float = 0.05
    good_parent_lr: float = 0.2
    refine_margin_f1: float = 0.01
    refine_margin_rand: float = 0.005
    refine_blend_f1: float = 1.0
    refine_blend_rand: float = 0.25
    blend_steps: float = 0.8
    tie_pixel_margin: float = 0.01
    tie_noise_z: float = 1.5
    retune_noise_z: float = 0.0
    adapt_freeze: str = "input"
    refine_freeze_rand: str = "input"
    regime_input: str = "unsmoothed"
    untrained_duel: bool = True
    scale: ScaleConfig = field(default_factory=ScaleConfig)
    smooth: SmoothConfig = field(default_factory=SmoothConfig)

    def __post_init__(self) -> None:
        if self.polarity not in ("auto", "keep", "invert"):
            raise ValueError(f"polarity must be 'auto', 'keep' or 'invert', got {self.polarity!r}")
        if self.start not in ("parent", "scratch"):
            raise ValueError(f"start must be 'parent' or 'scratch', got {self.start!r}")
        if not 0 <= self.holdout < 1:
            raise ValueError(f"holdout must be in [0, 1), got {self.holdout}")
        if not self.anchor_below_slices_f1 >= 0:
            raise ValueError(f"anchor_below_slices_f1 must be >= 0, got "
                             f"{self.anchor_below_slices_f1}")
        if min(self.tie_noise_z, self.retune_noise_z) < 0:
            raise ValueError(f"tie_noise_z and retune_noise_z must be >= 0, got "
                             f"{self.tie_noise_z} and {self.retune_noise_z}")
        if self.regime_input not in ("unsmoothed", "all", "polarity"):
            raise ValueError(f"regime_input must be 'unsmoothed', 'all' or 'polarity', got "
                             f"{self.regime_input!r}")
        for k in ("adapt_freeze", "refine_freeze_rand"):
            if getattr(self, k) not in FREEZE:
                raise ValueError(f"{k} must be one of {', '.join(FREEZE)}, got "
                                 f"{getattr(self, k)!r}")

    def steps_for(self, slice_sizes: Sequence[int]) -> int:
        """Steps for corrected slices of these pixel counts (``train.steps`` if set)."""
        if self.train.steps > 0:
            return int(self.train.steps)
        k = corrected_amount(slice_sizes)
        return int(min(self.steps_max, self.steps_base + self.steps_per_slice * k))

    def anchors_objects(self, slice_sizes: Sequence[int]) -> bool:
        """Whether a round refining objects anchors, for corrected slices of these sizes."""
        return corrected_amount(slice_sizes) < self.anchor_below_slices_f1


def corrected_amount(slice_sizes: Sequence[int]) -> float:
    """Slices' worth of corrections: each slice counts once, a megapixel one as four."""
    return float(sum(max(1.0, n / 2**18) for n in slice_sizes))
