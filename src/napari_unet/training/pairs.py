"""Several (image, labels) pairs in one round: their corrected slices, anchors and names.

The one implementation behind the CLI's several ``--images``/``--labels`` pairs and the
Fine-tune dock's "also train on" list: every pair gives its corrected 2D slices, a few
uncorrected slices across all the pairs anchor the round, and the names say where each
corrected slice came from (``record["data"]`` of the new version).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..inference.inputs import as_image_view
from .samples import annotated_slices


def as_instances(labels: np.ndarray, connectivity: int = 2,
                 ignore_label: int | None = None) -> np.ndarray:
    """2D labels as instances: a mask (one value besides 0, e.g. 0/255) split into components.

    Parameters
    ----------
    labels : numpy.ndarray
        ``(Y, X)`` labels of one slice.
    connectivity : int
        1 (4-connected, for cells that tile the image: a diagonal gap in a membrane does
        not join two cells) or 2 (8-connected, for objects).
    ignore_label : int, optional
        A value that marks unannotated pixels: never split.

    Returns
    -------
    numpy.ndarray
        ``labels`` itself when it already holds several values (instances), else the
        connected components numbered from 1. A 0/255 membrane mask was one object of
        the whole slice: the round trained on one giant cell and its check counted one
        object.
    """
    values = np.unique(labels)
    values = values[values != 0]
    if len(values) != 1 or (ignore_label is not None and values[0] == ignore_label):
        return labels
    from scipy import ndimage as ndi

    structure = ndi.generate_binary_structure(2, connectivity)
    return ndi.label(labels != 0, structure=structure)[0].astype(np.int32)


def corrected_pairs(images: Any, labels: Any, slices: Sequence[int] | None,
                    channel_axis: int | None, in_channels: int, connectivity: int = 2,
                    ignore_label: int | None = None,
                    ) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    """The corrected 2D slices as ``(C, Y, X)`` float32 images and ``(Y, X)`` labels.

    ``images``/``labels`` are one image or stack each, or two lists of 2D images.
    ``slices`` defaults to every slice holding labels. A slice's mask (one value besides
    0) becomes its connected components (:func:`as_instances`, ``connectivity``).
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
    return [imgs[z] for z in zs], [as_instances(labs[z], connectivity, ignore_label)
                                   for z in zs], zs


def pick_slices(n_slices: int, exclude: Sequence[int], count: int = 3) -> list[int]:
    """Up to ``count`` evenly spaced slice indices outside ``exclude`` (anchor slices)."""
    free = [z for z in range(n_slices) if z not in set(exclude)]
    if len(free) <= count:
        return free
    return [free[int(round(i))] for i in np.linspace(0, len(free) - 1, count)]


@dataclass
class ImagePair:
    """One image and its labels, as a round takes them.

    Attributes
    ----------
    image : array-like
        The image as the model takes it (colour already reduced, see
        :func:`napari_unet.inference.inputs.to_model_channels`); numpy, dask or zarr.
    labels : array-like
        Labels of the image's spatial shape.
    name : str
        The image's name (file or layer), for messages and the record.
    labels_name : str
        The labels' name, for messages.
    channel_axis : int, optional
        Channel axis of ``image``.
    slices : sequence of int, optional
        The corrected slices (0 for a 2D image); None: every slice holding labels.
    """

    image: Any
    labels: Any
    name: str
    labels_name: str
    channel_axis: int | None = None
    slices: Sequence[int] | None = None


@dataclass
class GatheredSlices:
    """The corrected 2D slices of several pairs, uncorrected anchor slices and names.

    Attributes
    ----------
    images : list of numpy.ndarray
        Corrected slices as float32 ``(C, Y, X)`` (pass ``channel_axis=0`` to the round).
    labels : list of numpy.ndarray
        Their ``(Y, X)`` labels.
    anchors : list of numpy.ndarray
        Up to ``n_anchors`` uncorrected ``(C, Y, X)`` slices, evenly spread over all pairs.
    names : list of str
        ``"image[z]"`` (stacks) or ``"image"`` (2D) for each corrected slice.
    n_images : int
        The number of pairs.
    """

    images: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    anchors: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    n_images: int = 0

    def data_note(self) -> str:
        """What the round trained on, for ``record["data"]``."""
        return (f"{len(self.names)} corrected slice(s) of {self.n_images} images: "
                f"{', '.join(self.names)}")


def _mismatch(pair: ImagePair, labels_shape: tuple, expected: tuple) -> str:
    return (f"{pair.labels_name}: labels shape {tuple(labels_shape)} differs from "
            f"{pair.name}'s spatial shape {tuple(expected)}")


def pair_shape_error(pair: ImagePair, in_channels: int | None = None) -> str | None:
    """A one-line message when the labels do not fit the image (None when they do).

    Parameters
    ----------
    pair : ImagePair
        The pair; only the shapes are looked at (nothing is read).
    in_channels : int, optional
        The model's input channels. Without it (the model is not loaded yet) the check
        accepts the image's shape without its channel axis, or without a first axis of
        channels; the round checks exactly again.

    Returns
    -------
    str or None
        The message.
    """
    shape, lab = tuple(np.shape(pair.image)), tuple(np.shape(pair.labels))
    if in_channels is not None:
        view = as_image_view(pair.image, in_channels, pair.channel_axis)
        expected = (view.n_slices, *view.yx) if view.is_stack else tuple(view.yx)
        return None if lab == expected else _mismatch(pair, lab, expected)
    if pair.channel_axis is not None:
        axis = pair.channel_axis % len(shape)
        expected = shape[:axis] + shape[axis + 1:]
        return None if lab == expected else _mismatch(pair, lab, expected)
    return None if lab in (shape, shape[1:]) else _mismatch(pair, lab, shape)


def gather_pairs(pairs: Sequence[ImagePair], in_channels: int,
                 ignore_label: int | None = None, n_anchors: int = 3) -> GatheredSlices:
    """The corrected 2D slices of every pair, anchors across them, and their names.

    Parameters
    ----------
    pairs : sequence of ImagePair
        The images and labels.
    in_channels : int
        The model's input channels.
    ignore_label : int, optional
        A label value that does not count as annotation (pairs without ``slices``).
    n_anchors : int
        Uncorrected slices to pick, evenly spaced over all pairs' uncorrected slices
        (only those are read).

    Returns
    -------
    GatheredSlices

    Raises
    ------
    ValueError
        A pair whose labels do not fit its image, a corrected slice out of range, or no
        corrected slice in any pair.
    """
    from .train import annotated_slices

    out = GatheredSlices(n_images=len(pairs))
    free: list[tuple[Any, int]] = []  # (view, z) of the uncorrected slices, read when picked
    for pair in pairs:
        error = pair_shape_error(pair, in_channels)
        if error:
            raise ValueError(error)
        view = as_image_view(pair.image, in_channels, pair.channel_axis)
        lab = pair.labels
        lab3 = lab if view.is_stack else np.asarray(lab)[None]
        if pair.slices is None:
            done = set(annotated_slices(np.asarray(lab3), ignore_label))
        else:
            done = {int(z) for z in pair.slices}
            bad = sorted(z for z in done if not 0 <= z < view.n_slices)
            if bad:
                raise ValueError(f"{pair.labels_name}: slice {bad[0]} is out of range for "
                                 f"{view.n_slices} slice(s)")
        for z in range(view.n_slices):
            if z not in done:
                free.append((view, z))
                continue
            out.images.append(view.slice(z))
            out.labels.append(np.asarray(lab3[z]))
            out.names.append(f"{pair.name}[{z}]" if view.is_stack else pair.name)
    if not out.images:
        raise ValueError(f"no corrected slice in any of the {len(pairs)} labels: paint labels "
                         "(and mark the slices you corrected) first")
    out.anchors = [free[i][0].slice(free[i][1]) for i in pick_slices(len(free), [], n_anchors)]
    return out
