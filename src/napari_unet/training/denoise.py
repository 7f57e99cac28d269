"""Whether a round's new version smooths its input: noisy images, measured on the corrections.

Photon-limited fluorescence, fast EM scans and low-dose images carry pixel noise that the
starters never saw: on blurred, Poisson-noisy nuclei (``bench_adapt.py`` blur_noise) the
fluorescence starter scores F1 0.573, and 0.674 on the same images after a Gaussian of one
pixel. The input of a model can therefore be smoothed after its normalisation
(:attr:`napari_unet.normalize.Normalization.smooth`, applied alike in training and
prediction). A round lets the parent predict the corrected slices with each candidate
smoothing (:func:`candidate_sigmas`); another one than the parent's own is taken only when
it segments them clearly better (:func:`pick_smoothing`), as the polarity and the scale are.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

# 2 px was a candidate too: brightfield k = 4 took it and lost 0.014 F1 (0.876 against 0.890
# without smoothing, 0.886 with 1 px at most); blur_noise never took it
SIGMAS = (0.0, 1.0)


@dataclass
class SmoothConfig:
    """How a round picks its new version's input smoothing.

    Parameters
    ----------
    mode : str
        ``"auto"`` (measure it on the corrections) or ``"keep"`` (the parent's).
    sigmas : tuple of float
        Candidate Gaussian widths in the network's input pixels (0: none).
    margin_f1, margin_rand : float
        Another smoothing than the parent's is taken only when the parent's score on the
        corrected slices with it is better than with its own by more than this.
    """

    mode: str = "auto"
    sigmas: tuple[float, ...] = SIGMAS
    margin_f1: float = 0.03
    margin_rand: float = 0.005

    def __post_init__(self) -> None:
        if self.mode not in ("auto", "keep"):
            raise ValueError(f"smoothing must be 'auto' or 'keep', got {self.mode!r}")
        if any(s < 0 or s > 8 for s in self.sigmas):
            raise ValueError(f"smoothing widths must be in [0, 8] px, got {self.sigmas}")


def smoothing(model: Any) -> float:
    """The Gaussian width (input pixels) ``model`` smooths its normalised input with."""
    return float(model.config.normalization.get("smooth", 0.0) or 0.0)


def with_smoothing(model: Any, sigma: float) -> Any:
    """A copy of ``model`` that smooths its normalised input with a Gaussian of ``sigma``."""
    out = copy.deepcopy(model)
    out.config.normalization = {**out.config.normalization, "smooth": float(sigma)}
    return out


def candidate_sigmas(current: float, cfg: SmoothConfig) -> list[list[float]]:
    """The widths to try besides ``current``: those above it, then those below.

    Each run is ordered away from ``current``; a round stops a run at the first width that
    scores no better than the one before (in-domain data costs one prediction more, not two).
    """
    up = sorted(float(s) for s in cfg.sigmas if s > current + 1e-6)
    down = sorted((float(s) for s in cfg.sigmas if s < current - 1e-6), reverse=True)
    return [run for run in (up, down) if run]


def pick_smoothing(scored: Sequence[tuple[float, float]], fill: bool, cfg: SmoothConfig) -> float:
    """The best ``(sigma, quality)`` when it beats the first (the parent's) by the margin.

    ``quality`` is the parent's F1 on the corrected slices (higher is better) or, when
    ``fill`` (cells filling the image), its adapted Rand error (lower is better).
    """
    sign = -1.0 if fill else 1.0
    margin = cfg.margin_rand if fill else cfg.margin_f1
    current, q0 = scored[0]
    sigma, q = max(scored, key=lambda sq: sign * sq[1])
    return sigma if sign * (q - q0) > margin else current
