"""Agreement with the parent on uncorrected slices: a tie-breaker for the re-tuned thresholds.

Used by :func:`napari_unet.training.selfcheck.tune_postprocess` through the round
(:mod:`napari_unet.training.loop`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from ..inference.postprocess import labels_from_probabilities
from ..metrics import adapted_rand, match_f1


class Agreement:
    """How well candidate settings on ``probs`` reproduce ``settings`` on ``reference``.

    For a round that refines a good parent (:mod:`napari_unet.training.loop`): ``reference`` are the
    parent's probabilities on the uncorrected anchor slices, ``probs`` the new version's.
    A round on one ISBI slice moved the new version's best seed threshold from 0.5 to
    0.6-0.7 (0.5 merged cells: labels error 0.086 against the parent's 0.046), a shift that
    the held-back block (error ~0.001 at every threshold) cannot see but agreement with the
    parent on the other slices finds. Calling it on candidate settings returns ``-adapted
    Rand error`` (cells that fill the image) or the F1 of the candidate's labels against the
    parent's, averaged over the slices; each candidate is scored once.

    ``resolution``, the smallest gain that says something: one of the parent's objects
    changing its match (``1 / n_objects``; on blur_noise 0.015 over ~40 anchor nuclei moved
    the threshold 0.6 -> 0.7, test F1 0.625 -> 0.557); 0 for adapted Rand (pixel pairs).
    """

    def __init__(self, settings: dict[str, Any], reference: Sequence[np.ndarray],
                 probs: Sequence[np.ndarray]) -> None:
        self.refs = [labels_from_probabilities(p, **settings) for p in reference]
        self.probs = list(probs)
        self.fill = bool(settings["fill"])
        n = sum(len(np.unique(r[r > 0])) for r in self.refs)
        self.resolution = 0.0 if self.fill else 1.0 / max(1, n)
        self._cache: dict[str, float] = {}

    def __call__(self, c: dict[str, Any]) -> float:
        """The agreement of candidate settings ``c`` (higher is better)."""
        key = repr(sorted(c.items()))
        if key not in self._cache:
            segs = [labels_from_probabilities(p, **c) for p in self.probs]
            self._cache[key] = float(np.mean([
                -adapted_rand(r, s) if self.fill else match_f1(r, s)["f1"]
                for r, s in zip(self.refs, segs, strict=True)]))
        return self._cache[key]


anchor_agreement = Agreement  # the loop's name for it
