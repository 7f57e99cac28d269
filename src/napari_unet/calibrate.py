"""Re-pick the seed threshold of a fine-tuned model on slices nobody corrected.

Fine-tuning on a few corrected EM slices shifts the network's calibration: its quality at the
best threshold stays, but the best seed threshold moves (about 0.4-0.5 to 0.8-0.9 in
``benchmarks/bench_quality.py``), so the inherited threshold merges cells through membrane
gaps. The corrected slices cannot tell, because the model has just fitted them. A reference
model's confident seeds on *uncorrected* slices can: the new threshold is the one at which
the new model's partition agrees best with them (adapted Rand error, the reference's unsure
pixels ignored). The reference is the model the chain of fine-tunings started from, whose
settings were tuned on labelled data; referring each round to the previous round instead let
the threshold drift (0.7, 0.5, 0.3 over three rounds). Only models whose labels fill the
image are recalibrated; that is where the shift was measured.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from .metrics import adapted_rand
from .postprocess import labels_from_probabilities, postprocess_settings

THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def agreement_threshold(
    probabilities: Sequence[np.ndarray], reference: Sequence[np.ndarray], settings: dict[str, Any],
    thresholds: Sequence[float] = THRESHOLDS,
) -> tuple[float, dict[float, float]]:
    """The seed threshold whose labels agree best with reference labels.

    Parameters
    ----------
    probabilities : sequence of numpy.ndarray
        ``(K, Y, X)`` class probabilities of the new model, one per slice.
    reference : sequence of numpy.ndarray
        Reference labels of the same slices (0 = unsure, ignored).
    settings : dict
        Post-processing settings; only ``threshold`` is varied.
    thresholds : sequence of float
        Candidates.

    Returns
    -------
    tuple
        The best threshold and the mean adapted Rand error of each candidate.
    """
    if len(probabilities) != len(reference) or not len(reference):
        raise ValueError("give one reference label image per probability map (at least one)")
    scores = {}
    for th in thresholds:
        pp = {**settings, "threshold": float(th)}
        scores[float(th)] = float(np.mean([adapted_rand(r, labels_from_probabilities(p, **pp))
                                           for p, r in zip(probabilities, reference, strict=True)]))
    return min(scores, key=scores.get), scores


def pick_slices(n_slices: int, exclude: Sequence[int], count: int = 3) -> list[int]:
    """Up to ``count`` evenly spaced slice indices outside ``exclude``."""
    free = [z for z in range(n_slices) if z not in set(exclude)]
    if len(free) <= count:
        return free
    return [free[int(round(i))] for i in np.linspace(0, len(free) - 1, count)]


def uncorrected_slices(stack: Any, exclude: Sequence[int], count: int = 3) -> list[np.ndarray]:
    """Up to ``count`` evenly spaced 2D slices of a ``(Z, Y, X)`` stack outside ``exclude``."""
    return [np.asarray(stack[z]) for z in pick_slices(np.shape(stack)[0], exclude, count)]


def recalibrate_iter(
    model: Any, reference: Any, slices: Sequence[np.ndarray], **predict_kw: Any
) -> Generator[str, None, dict]:
    """Store in ``model`` the seed threshold that agrees best with ``reference`` on ``slices``.

    A generator: it yields a short status line after each prediction (so a GUI worker can
    show it and cancel between predictions) and returns what :func:`recalibrate` returns.
    """
    from .predict import predict

    settings = postprocess_settings(model)
    if not slices or not settings["fill"]:
        return {}
    ref_pp = {**postprocess_settings(reference), "fill": False, "watershed": False}
    seeds, probs = [], []
    for i, s in enumerate(slices, 1):
        seeds.append(labels_from_probabilities(predict(reference, s, **predict_kw), **ref_pp))
        probs.append(predict(model, s, **predict_kw))
        yield f"recalibrating the seed threshold: slice {i}/{len(slices)}"
    best, scores = agreement_threshold(probs, seeds, settings)
    model.record.setdefault("postprocess", {}).update({**settings, "threshold": best})
    return {"threshold": best, "previous_threshold": settings["threshold"], "scores": scores}


def recalibrate(model: Any, reference: Any, slices: Sequence[np.ndarray], **predict_kw: Any) -> dict:
    """Store in ``model`` the seed threshold that agrees best with ``reference`` on ``slices``.

    Parameters
    ----------
    model : UNet
        The fine-tuned model; ``model.record["postprocess"]["threshold"]`` is updated.
    reference : UNet
        The model the fine-tuning started from, e.g. a built-in model (its stored settings
        make the reference seeds).
    slices : sequence of numpy.ndarray
        Uncorrected 2D slices (``(Y, X)`` or ``(C, Y, X)``).
    **predict_kw
        Passed to :func:`napari_unet.predict.predict` (device, precision, channel_axis).

    Returns
    -------
    dict
        ``{"threshold": new, "previous_threshold": old, "scores": {...}}``, or ``{}`` when
        nothing was done (no slices, or labels that do not fill the image).
    """
    gen = recalibrate_iter(model, reference, slices, **predict_kw)
    while True:
        try:
            next(gen)
        except StopIteration as stop:
            return stop.value
