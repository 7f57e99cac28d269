"""The Fine-tune dock's jobs, Qt-free: a round from a model version, and its helpers.

A round trains on one image (:func:`finetune_iter`) or on several (image, labels) pairs
(:func:`finetune_pairs_iter`).

The augmentation preview, the scan for annotated slices and the snapshot of the labels to
train on run in the dock's workers too.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from ..jobs import Event, Stage
from ..model_record import update_record
from ..model_versions import ModelVersion
from .pairs import ImagePair


def annotated_iter(labels: Any) -> Generator[Stage, None, list[int]]:
    """Slices of a label stack holding any annotation, one slice at a time (a stage each).

    Runs in a worker for large stacks, so that scanning them never freezes napari.
    """
    from .train import annotated_slices

    if np.ndim(labels) == 2:
        return annotated_slices(np.asarray(labels))
    found, n = [], labels.shape[0]
    for z in range(n):
        found += [z] if annotated_slices(np.asarray(labels[z])[None]) else []
        yield Stage(f"scanned slice {z + 1}/{n}", (z + 1) / n)
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
    slices: Sequence[int] | None, channel_axis: int | None,
) -> Generator[Event, None, Any]:
    """One round of the loop (:func:`napari_unet.training.loop.finetune_round`) from ``version``.

    Yields its ``Stage`` messages and ``TrainEvent`` steps and returns its ``RoundResult``. The
    version's own model is never modified, so cancelling (stopping the worker) leaves it
    exactly as it was. For a single-channel stack, three uncorrected slices anchor it. A
    colour image is converted the way the model takes it (gray for a 1-channel model, all
    channels for a model with as many inputs).
    """
    from ..inference.segment_job import model_input
    from .loop import finetune_round
    from .pairs import pick_slices

    yield Stage(f"preparing {version.name}")  # Stop is honoured from here on
    base = version.get_model()
    images, channel_axis, note = model_input(images, base.in_channels, channel_axis)
    if note:
        yield Stage(note)
    stack = slices is not None and channel_axis is None and np.ndim(images) == 3
    anchors = [np.asarray(images[z]) for z in pick_slices(np.shape(images)[0], slices)] \
        if stack else None
    return (yield from finetune_round(base, images, labels, config, slices=slices,
                                      channel_axis=channel_axis, anchors=anchors,
                                      name=version.name))


def finetune_pairs_iter(
    version: ModelVersion, pairs: Sequence[ImagePair], config: Any,
) -> Generator[Event, None, Any]:
    """One round on several (image, labels) pairs at once, from ``version``.

    The corrected slices of every pair (:func:`napari_unet.training.pairs.gather_pairs`)
    are trained on together; up to ``config.n_anchors`` uncorrected slices across the
    pairs anchor the round, and the self-check holds back a block of every corrected
    slice. Each image is converted the way the model takes it (:func:`finetune_iter`).
    The new version's ``record["data"]`` names the slices and images.

    Yields
    ------
    Stage or TrainEvent
        Stage messages, then the training steps.

    Returns
    -------
    RoundResult
    """
    from ..inference.segment_job import model_input
    from .loop import finetune_round
    from .pairs import gather_pairs

    yield Stage(f"preparing {version.name}")
    base = version.get_model()
    ready = []
    for pair in pairs:
        image, axis, note = model_input(pair.image, base.in_channels, pair.channel_axis)
        if note:
            yield Stage(f"{pair.name}: {note}")
        ready.append(replace(pair, image=image, channel_axis=axis))
    yield Stage(f"reading the corrected slices of {len(ready)} images")
    got = gather_pairs(ready, base.in_channels, config.train.ignore_label, config.n_anchors)
    result = yield from finetune_round(
        base, got.images, got.labels, config, slices=list(range(len(got.images))),
        channel_axis=0, anchors=got.anchors or None, name=version.name)
    update_record(result.model, data=got.data_note())
    return result


def preview_iter(
    image: np.ndarray, labels: np.ndarray, channel_axis: int | None, seed: int | None,
) -> Generator[Stage, None, tuple[np.ndarray, np.ndarray]]:
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
    from ..normalize import Normalization
    from .augment import AugmentConfig, augment_sample

    yield Stage("normalising")
    img = np.asarray(image, np.float32)
    if channel_axis is not None:
        img = np.moveaxis(img, channel_axis, 0)
    img = Normalization()(img, channel_axis=0 if img.ndim == 3 else None)
    yield Stage("augmenting")
    rng = np.random.default_rng(seed)
    out_img, out_lab, _ = augment_sample(img, np.asarray(labels), None, AugmentConfig(), rng)
    return np.asarray(out_img, np.float32), np.asarray(out_lab)
