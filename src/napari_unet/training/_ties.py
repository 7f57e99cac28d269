"""When the self-check's scores decide, and when they are a tie for the pixels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def decisive(gain: float, margin: float) -> bool:
    """Whether a score ``gain`` (new over parent) decides, or is a tie for the pixels.

    A tie is a gain under ``margin``, or exactly 0 when ``margin`` is 0 (F1 0.000 -> 0.000 on
    two touching nuclei that both models merged: tissue, whose new version's pixels were right
    where the parent's were inverted, had been rejected as "not better").
    """
    return abs(gain) >= max(margin - 1e-9, 1e-9)


def n_objects(regions: Sequence[tuple[Any, np.ndarray, Any]]) -> int:
    """The true objects in the boxes of ``(probabilities, truth, box)`` regions."""
    return int(sum(np.count_nonzero(np.unique(truth[box])) for _, truth, box in regions))


def f1_noise(parent: float, new: float, n: int) -> float:
    """The standard error of an F1 difference measured on ``n`` objects.

    Each score is treated as a share of ``n`` objects found (binomial variance
    ``F (1 - F) / n``), the two as independent: ``sqrt((Fp (1 - Fp) + Fn (1 - Fn)) / n)``.
    A check on a few held-back nuclei is noisy: blur_noise, seven objects, 0.885 -> 0.773
    while the test went 0.573 -> 0.687 and the pixels 0.905 -> 0.979 (docs/models.md,
    session 19). 0 when both scores are 0 or 1, or without objects.
    """
    if n <= 0:
        return 0.0
    return float(np.sqrt((parent * (1 - parent) + new * (1 - new)) / n))
