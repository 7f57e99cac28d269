"""Worker generators of the Fine-tune dock: training and the augmentation preview."""

from __future__ import annotations

import copy
from collections.abc import Generator, Sequence
from typing import Any

import numpy as np

from .session import ModelVersion


def annotated_iter(labels: Any) -> Generator[int, None, list[int]]:
    """Slices of a label stack holding any annotation, one slice at a time (yields each index).

    Runs in a worker for large stacks, so that scanning them never freezes napari.
    """
    from ..train import annotated_slices

    if np.ndim(labels) == 2:
        return annotated_slices(np.asarray(labels))
    found = []
    for z in range(labels.shape[0]):
        found += [z] if annotated_slices(np.asarray(labels[z])[None]) else []
        yield z
    return found


def labels_snapshot(labels: Any, slices: Sequence[int] | None) -> np.ndarray:
    """A copy of the labels to train on, so that painting can go on during training.

    For stacks only the ``slices`` to train on are copied into a zero-filled array (the
    operating system hands out the untouched zero pages lazily), which keeps the copy
    cheap and off the GUI thread's critical path even for stacks of many GB.
    """
    if slices is None:
        return np.array(labels)
    out = np.zeros(labels.shape, labels.dtype)
    for z in slices:
        out[z] = labels[z]
    return out


def finetune_iter(
    version: ModelVersion, images: Any, labels: np.ndarray, config: Any,
    slices: Sequence[int] | None, channel_axis: int | None, root: ModelVersion | None = None,
) -> Generator[Any, None, Any]:
    """Fine-tune a copy of ``version``'s model; yields ``TrainEvent`` and returns the copy.

    The version's own model is never modified, so cancelling (stopping the worker) leaves
    it exactly as it was. For a single-channel stack, three uncorrected slices anchor the
    fine-tuning (the model keeps its predictions there unless the corrections say
    otherwise; :mod:`napari_unet.anchor`), and models whose labels fill the image then get
    their seed threshold recalibrated on the same slices, against the seeds of ``root``
    (the version the chain of fine-tunings started from, whose settings were tuned on
    labelled data; default ``version``; see :mod:`napari_unet.calibrate`), yielding status
    strings meanwhile. The result is in ``record["calibration"]``.
    """
    from ..calibrate import recalibrate_iter, uncorrected_slices
    from ..train import fine_tune

    base = version.get_model()
    model = copy.deepcopy(base)
    model.record["name"] = version.name
    model.record.pop("calibration", None)  # the parent's, if any
    stack = slices is not None and channel_axis is None and np.ndim(images) == 3
    free = uncorrected_slices(images, slices) if stack else None
    trained = yield from fine_tune(model, images, labels, config, slices=slices,
                                   channel_axis=channel_axis, anchors=free)
    if free:
        trained.eval()
        ref = base if root is None or root is version else root.get_model()
        cal = yield from recalibrate_iter(trained, ref, free, device=config.device)
        if cal:
            trained.record["calibration"] = {k: cal[k] for k in ("threshold", "previous_threshold")}
    return trained


def preview_iter(
    image: np.ndarray, labels: np.ndarray, channel_axis: int | None, seed: int | None,
) -> Generator[str, None, tuple[np.ndarray, np.ndarray]]:
    """One randomly augmented (elastic, flips, rotation, intensity) sample of a 2D slice.

    Parameters
    ----------
    image : numpy.ndarray
        ``(Y, X)`` or, with ``channel_axis``, a multichannel 2D image.
    labels : numpy.ndarray
        ``(Y, X)`` labels.
    channel_axis : int, optional
        Channel axis of ``image``.
    seed : int, optional
        Random seed (None: a new sample each time).

    Returns
    -------
    tuple of numpy.ndarray
        The augmented image (``(Y, X)`` or ``(C, Y, X)``, normalised) and labels.
    """
    from ..augment import AugmentConfig, augment_sample
    from ..normalize import Normalization

    yield "normalising"
    img = np.asarray(image, np.float32)
    if channel_axis is not None:
        img = np.moveaxis(img, channel_axis, 0)
    img = Normalization()(img, channel_axis=0 if img.ndim == 3 else None)
    yield "augmenting"
    rng = np.random.default_rng(seed)
    out_img, out_lab, _ = augment_sample(img, np.asarray(labels), None, AugmentConfig(), rng)
    return np.asarray(out_img, np.float32), np.asarray(out_lab)
