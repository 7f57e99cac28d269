"""The Segment job: predict, post-process, and the next slice worth correcting (no Qt).

:func:`segment_iter` runs in the Segment dock's worker (and after Fine-tune's training,
for its "predict after training" option); :mod:`napari_unet._qt.segment_layers` puts its
:class:`SegmentOutput` into napari's layers.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..jobs import Event, Stage
from ..model_versions import ModelVersion
from .postprocess import PostprocessConfig
from .predict_config import PredictConfig


@dataclass
class SegmentRequest:
    """Everything the worker needs, gathered in the GUI thread."""

    image: Any
    channel_axis: int | None = None
    slices: list[int] | None = None
    #: how to predict: the dock's device, TTA and uncertainty choices
    predict: PredictConfig = field(default_factory=lambda: PredictConfig(tta=False,
                                                                         uncertainty=True))
    postprocess: PostprocessConfig = field(default_factory=PostprocessConfig)


@dataclass
class SegmentOutput:
    """Per predicted slice: labels, foreground probability and uncertainty."""

    slices: list[int]
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    foreground: dict[int, np.ndarray] = field(default_factory=dict)
    uncertainty: dict[int, np.ndarray] = field(default_factory=dict)
    device: str = "cpu"
    is_stack: bool = False
    note: str = ""
    stack: np.ndarray | None = None  # every slice's labels, when the whole stack was predicted
    #: ``{"foreground": (Z, Y, X), "uncertainty": (Z, Y, X)}`` float32 arrays made in the
    #: worker when the whole stack was predicted: the layers take them without a copy
    stacks: dict[str, np.ndarray] = field(default_factory=dict)
    uncertainty_max: float = 0.0  # of the predicted slices (measured in the worker)


def segment_iter(version: ModelVersion, req: SegmentRequest) -> Generator[Event, None, SegmentOutput]:
    """Predict and post-process in the worker thread.

    Yields a :class:`~napari_unet.jobs.Stage` for a colour image converted to gray (its
    message says "converted"), the prediction's :class:`~napari_unet.inference.predict.Progress`
    events, then a ``Stage`` per post-processed slice.

    Parameters
    ----------
    version : ModelVersion
        The model version (loaded here if needed).
    req : SegmentRequest
        Image and options.

    Returns
    -------
    SegmentOutput
        The 2D results of each predicted slice.
    """
    from .predict import predict_iter

    model = version.get_model()
    image, axis, note = model_input(req.image, model.in_channels, req.channel_axis)
    if note:
        yield Stage(note)
    result = yield from predict_iter(model, image, req.predict, channel_axis=axis,
                                     slices=req.slices)
    probs = result.probabilities
    is_stack = probs.ndim == 4
    fg_class = min(1, probs.shape[0] - 1)
    out = SegmentOutput(list(result.slices), device=f"{result.device}, {result.precision}",
                        is_stack=is_stack, note=note)
    running = 0  # ids unique across the predicted slices, made here rather than in the GUI
    for k, z in enumerate(result.slices, 1):
        p = probs[:, z] if is_stack else probs
        lab = np.asarray(req.postprocess.labels(p, fg_class=fg_class), np.int32)
        high = int(lab.max()) if lab.size else 0
        if running and high:
            lab[lab > 0] += running
        running += high
        out.labels[z] = lab
        out.foreground[z] = p[fg_class].astype(np.float32, copy=False)
        if result.uncertainty is not None:
            u = result.uncertainty[z] if is_stack else result.uncertainty
            out.uncertainty[z] = np.asarray(u, np.float32)
            out.uncertainty_max = max(out.uncertainty_max, float(np.max(out.uncertainty[z])))
        # Cancel is honoured between slices
        yield Stage(f"post-processed slice {z}", k / len(result.slices))
    if is_stack and len(out.slices) == probs.shape[1]:  # the whole stack, as the new layer
        out.stack = np.stack([out.labels[z] for z in range(probs.shape[1])])
        out.labels = {z: out.stack[z] for z in range(probs.shape[1])}
        # whole float stacks too: copying 20 slices of 1024^2 into a layer in the GUI
        # thread (page faults of a fresh array included) blocked it for 0.3-0.9 s
        out.stacks["foreground"] = np.ascontiguousarray(probs[fg_class], np.float32)
        out.foreground = {z: out.stacks["foreground"][z] for z in out.slices}
        if out.uncertainty:
            out.stacks["uncertainty"] = np.ascontiguousarray(result.uncertainty, np.float32)
            out.uncertainty = {z: out.stacks["uncertainty"][z] for z in out.slices}
    return out


def model_input(image: Any, in_channels: int, channel_axis: int | None,
                ) -> tuple[Any, int | None, str]:
    """The image as the model takes it (:func:`napari_unet.inference.inputs.to_model_channels`).

    A colour image given to a 1-channel model becomes gray (luminance); a model with as
    many inputs as the image has channels gets them all. Runs in the worker (a whole
    colour stack is converted).

    Returns
    -------
    tuple
        ``(image, channel_axis, note)``; ``note`` says what was converted ("" if nothing).
    """
    from .inputs import to_model_channels

    out, axis = to_model_channels(image, in_channels, channel_axis, "auto")
    note = (f"colour image converted to gray for a {in_channels}-channel model"
            if np.ndim(out) < np.ndim(image) else "")
    return out, axis, note


def next_slice_to_correct(
    uncertainty: np.ndarray, predicted: Sequence[int], corrected: Sequence[int],
) -> int | None:
    """Find the predicted, unmarked slice with the highest mean uncertainty.

    Parameters
    ----------
    uncertainty : numpy.ndarray
        ``(Z, Y, X)`` (or ``(Y, X)``) uncertainty map.
    predicted : sequence of int
        Slices that hold a prediction.
    corrected : sequence of int
        Slices marked as corrected (skipped).

    Returns
    -------
    int or None
        The slice index.
    """
    u = np.asarray(uncertainty)
    if u.ndim == 2:
        u = u[None]
    marked = set(corrected)
    candidates = [int(z) for z in predicted if int(z) not in marked and 0 <= int(z) < len(u)]
    if not candidates:
        return None
    means = [float(np.mean(u[z])) for z in candidates]
    return candidates[int(np.argmax(means))]
