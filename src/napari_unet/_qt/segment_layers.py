"""Segment's results into napari's layers: labels, probability and uncertainty.

Only the pixels that change are written, as one undo step of the Labels layer; corrected
slices can be kept or sent to a preview layer. Used by the Segment dock and by
Fine-tune's "predict after training" option (the job itself is
:mod:`napari_unet.inference.segment_job`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from ..inference.segment_job import SegmentOutput
from .layers import spatial_ndim
from .session import get_session

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels


#: ``metadata`` key listing the slices a probability/uncertainty layer holds.
PREDICTED_KEY = "napari_unet_predicted"


def labels_name(image: Image) -> str:
    """Name of the Labels layer that Segment writes for ``image``."""
    return f"{image.name} labels"


def spatial_shape(image: Image) -> tuple[int, ...]:
    """Spatial shape of an Image layer (RGB axis dropped)."""
    shape = tuple(int(s) for s in image.data.shape)
    return shape[:-1] if getattr(image, "rgb", False) else shape


def _get_or_add(
    viewer: napari.Viewer, name: str, shape: tuple[int, ...], dtype: Any, image: Image,
    kind: str, **kwargs: Any,
) -> Any:
    """Return the layer ``name`` (checked for shape), or add a zero-filled one."""
    if name in viewer.layers:
        layer = viewer.layers[name]
        if tuple(layer.data.shape) != shape:
            raise ValueError(
                f"layer {name!r} has shape {tuple(layer.data.shape)} but the image needs "
                f"{shape}; rename or delete it"
            )
        return layer
    add = viewer.add_labels if kind == "labels" else viewer.add_image
    ndim = len(shape)
    return add(
        np.zeros(shape, dtype), name=name, scale=tuple(image.scale)[-ndim:],
        translate=tuple(image.translate)[-ndim:], **kwargs,
    )


#: Suffix of the Labels layer that holds results not written over corrected slices.
PREVIEW_SUFFIX = "preview"


def _offset_ids(data: np.ndarray, out: SegmentOutput, written: Sequence[int]) -> dict[int, np.ndarray]:
    """New ids of each written slice, above every id left in the other slices.

    The worker made the ids unique across the predicted slices; here they are only moved
    above the ids of the slices not written (nothing to do for a new layer).
    """
    untouched = np.ones(data.shape[0], bool)
    untouched[list(written)] = False
    offset = max((int(data[k].max()) for k in np.flatnonzero(untouched)), default=0)
    if not offset:
        return {z: out.labels[z] for z in written}
    result = {}
    for z in written:
        new = np.array(out.labels[z], np.int64)
        new[new > 0] += offset
        result[z] = new
    return result


def _write_labels(viewer: napari.Viewer, image: Image, name: str, out: SegmentOutput,
                  written: Sequence[int], **kwargs: Any) -> Labels:
    """Write the labels of ``written`` slices into the Labels layer ``name`` (undoable)."""
    from .layer_writes import fits_dtype, write_label_slices

    shape = spatial_shape(image)
    if name not in viewer.layers:  # a new layer: nothing to undo, build it directly
        whole = out.stack is not None and len(written) == len(out.stack)
        data = out.stack if whole else np.zeros(shape, np.int32)
        if out.is_stack and not whole:
            for z, values in _offset_ids(data, out, written).items():
                data[z] = values
        elif not out.is_stack and written:
            data[...] = out.labels[written[0]]
        ndim = len(shape)
        contour = kwargs.pop("contour", 0)
        layer = viewer.add_labels(data, name=name, scale=tuple(image.scale)[-ndim:],
                                  translate=tuple(image.translate)[-ndim:], **kwargs)
        layer.contour = contour
        return layer
    labels = _get_or_add(viewer, name, shape, np.int32, image, "labels")
    data = np.asarray(labels.data)
    if out.is_stack:
        per_slice: dict[int | None, np.ndarray] = dict(_offset_ids(data, out, written))
    else:
        per_slice = {None: out.labels[written[0]]} if written else {}
    high = max((int(v.max()) for v in per_slice.values()), default=0)
    if not fits_dtype(data.dtype, high) or not isinstance(labels.data, np.ndarray):
        # ids would wrap around (or the data is not in memory): a new int32 array, which
        # napari cannot undo
        labels.data = np.asarray(data, np.int32)
    write_label_slices(labels, per_slice)
    return labels


def apply_segmentation(
    viewer: napari.Viewer, image: Image, out: SegmentOutput, *, keep: Sequence[int] = (),
    preview: Sequence[int] = (), probability: bool = False, uncertainty: bool = True,
) -> Labels | None:
    """Put the results into the Labels layer ``f"{image.name} labels"`` (and optional layers).

    Only the pixels that change are written, through the layer's ``data_setitem``, as one
    undo step: Ctrl-Z in the Labels layer restores what was there before.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    image : napari.layers.Image
        The image that was segmented.
    out : SegmentOutput
        The worker's result.
    keep : sequence of int
        Slices not to write at all.
    preview : sequence of int
        Slices (corrected ones) whose result goes into the Labels layer
        ``f"{image.name} preview"`` instead, so that the corrections stay as they are.
    probability, uncertainty : bool
        Also add/update ``"<image> probability"`` and ``"<image> uncertainty"``.

    Returns
    -------
    napari.layers.Labels or None
        The labels layer (None when every slice went to the preview or was kept).
    """
    aside = [z for z in out.slices if z in set(preview) and z not in set(keep)]
    written = [z for z in out.slices if z not in set(keep) and z not in set(aside)]
    name = labels_name(image)
    labels = None
    if written or name in viewer.layers:
        labels = _write_labels(viewer, image, name, out, written)
    if aside:
        _write_labels(viewer, image, f"{image.name} {PREVIEW_SUFFIX}", out, aside,
                      opacity=0.6, contour=1)
    shape = spatial_shape(image)
    layers = []
    if probability and out.foreground:
        layers.append(("probability", "foreground", dict(
            colormap="magma", blending="additive", contrast_limits=(0.0, 1.0))))
    if uncertainty and out.uncertainty:
        layers.append(("uncertainty", "uncertainty", dict(
            colormap="inferno", blending="additive", visible=False)))
    for suffix, what, kwargs in layers:
        _write_float_layer(viewer, image, out, suffix, what, shape, **kwargs)
    return labels


def _write_float_layer(viewer: napari.Viewer, image: Image, out: SegmentOutput, suffix: str,
                       what: str, shape: tuple[int, ...], **kwargs: Any) -> None:
    """Add or update the Image layer ``f"{image.name} {suffix}"`` with ``out``'s ``what``.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    image : napari.layers.Image
        The image that was segmented.
    out : SegmentOutput
        The worker's result.
    suffix : str
        ``"probability"`` or ``"uncertainty"``.
    what : str
        The per-slice maps of ``out`` to show (``"foreground"`` or ``"uncertainty"``).
    shape : tuple of int
        The image's spatial shape.
    **kwargs
        Display settings of a new layer.
    """
    from .layer_writes import write_image_slices

    per_slice = getattr(out, what)
    whole = out.stacks.get(what)
    name = f"{image.name} {suffix}"
    if whole is not None and name not in viewer.layers:  # the worker's array, no copy
        ndim = whole.ndim
        layer = viewer.add_image(whole, name=name, scale=tuple(image.scale)[-ndim:],
                                 translate=tuple(image.translate)[-ndim:], **kwargs)
    else:
        layer = _get_or_add(viewer, name, shape, np.float32, image, "image", **kwargs)
        if whole is not None and layer.data.dtype == whole.dtype:
            layer.data = whole  # an Image layer has no undo: replaced, not copied into
        else:
            write_image_slices(layer, {(z if out.is_stack else None): v
                                       for z, v in per_slice.items()})
    done = set(layer.metadata.get(PREDICTED_KEY, [])) | set(per_slice)
    layer.metadata[PREDICTED_KEY] = sorted(int(z) for z in done)
    if suffix == "uncertainty":
        hi = max(float(layer.contrast_limits[1]) if len(done) > len(per_slice) else 0.0,
                 out.uncertainty_max)
        layer.contrast_limits = (0.0, hi if hi > 0 else 1.0)


def corrected_among(labels: Labels | None, slices: Sequence[int]) -> list[int]:
    """Return the slices among ``slices`` that are marked as corrected in ``labels``."""
    if labels is None:
        return []
    marked = set(get_session().corrected(labels))
    return [z for z in slices if z in marked]


def layer_is_stack(layer: Any) -> bool:
    """Whether a layer is a ``(Z, Y, X)`` stack."""
    return spatial_ndim(layer) >= 3
