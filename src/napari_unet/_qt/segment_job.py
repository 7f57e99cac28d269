"""The Segment job: predict in a worker, then put labels, probability and uncertainty back.

Used by the Segment dock and by Fine-tune's "predict after training" option.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from .common import spatial_ndim
from .session import ModelVersion, get_session

if TYPE_CHECKING:
    import napari
    from napari.layers import Image, Labels

#: ``metadata`` key listing the slices a probability/uncertainty layer holds.
PREDICTED_KEY = "napari_unet_predicted"


@dataclass
class SegmentRequest:
    """Everything the worker needs, gathered in the GUI thread."""

    image: Any
    channel_axis: int | None = None
    slices: list[int] | None = None
    device: str = "auto"
    tta: bool = False
    uncertainty: bool = True
    threshold: float = 0.5
    watershed: bool = False
    min_size: int = 0
    fill: bool = False
    seed_threshold: float | None = None


@dataclass
class SegmentOutput:
    """Per predicted slice: labels, foreground probability and uncertainty."""

    slices: list[int]
    labels: dict[int, np.ndarray] = field(default_factory=dict)
    foreground: dict[int, np.ndarray] = field(default_factory=dict)
    uncertainty: dict[int, np.ndarray] = field(default_factory=dict)
    device: str = "cpu"
    is_stack: bool = False


def segment_iter(version: ModelVersion, req: SegmentRequest) -> Generator[Any, None, SegmentOutput]:
    """Predict and post-process in the worker thread; yields :class:`Progress` events.

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
    from ..postprocess import labels_from_probabilities
    from ..predict import predict_iter

    model = version.get_model()
    result = yield from predict_iter(
        model, req.image, channel_axis=req.channel_axis, slices=req.slices, device=req.device,
        tta=req.tta, uncertainty=req.uncertainty,
    )
    probs = result.probabilities
    is_stack = probs.ndim == 4
    fg_class = min(1, probs.shape[0] - 1)
    out = SegmentOutput(list(result.slices), device=f"{result.device}, {result.precision}",
                        is_stack=is_stack)
    for z in result.slices:
        p = probs[:, z] if is_stack else probs
        out.labels[z] = labels_from_probabilities(
            p, threshold=req.threshold, fg_class=fg_class, watershed=req.watershed,
            min_size=req.min_size, fill=req.fill, seed_threshold=req.seed_threshold,
        )
        out.foreground[z] = p[fg_class].astype(np.float32, copy=False)
        if result.uncertainty is not None:
            u = result.uncertainty[z] if is_stack else result.uncertainty
            out.uncertainty[z] = np.asarray(u, np.float32)
    return out


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


def write_slice(layer: Any, z: int | None, values: np.ndarray) -> None:
    """Write a 2D result into slice ``z`` of ``layer`` (the whole layer when ``z`` is None)."""
    data = np.asarray(layer.data)
    if z is None:
        data[...] = values
    else:
        data[z] = values
    layer.data = data  # emits events.data and refreshes the display


def apply_segmentation(
    viewer: napari.Viewer, image: Image, out: SegmentOutput, *, keep: Sequence[int] = (),
    probability: bool = False, uncertainty: bool = True,
) -> Labels:
    """Put the results into the Labels layer ``f"{image.name} labels"`` (and optional layers).

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    image : napari.layers.Image
        The image that was segmented.
    out : SegmentOutput
        The worker's result.
    keep : sequence of int
        Slices not to overwrite (corrected slices the user did not confirm).
    probability, uncertainty : bool
        Also add/update ``"<image> probability"`` and ``"<image> uncertainty"``.

    Returns
    -------
    napari.layers.Labels
        The labels layer.
    """
    shape = spatial_shape(image)
    labels = _get_or_add(viewer, labels_name(image), shape, np.int32, image, "labels")
    data = np.asarray(labels.data)
    if data.dtype.itemsize < 4:  # ids add up across the stack: no silent wrap-around
        data = data.astype(np.int32)
    written = [z for z in out.slices if z not in keep]
    if out.is_stack:
        # new ids start above every id left in the other slices: unique across the stack
        untouched = np.ones(data.shape[0], bool)
        untouched[written] = False
        offset = max((int(data[k].max()) for k in np.flatnonzero(untouched)), default=0)
        for z in written:
            new = out.labels[z]
            data[z] = np.where(new > 0, new + offset, 0)
            offset += int(new.max())
    elif written:
        data[...] = out.labels[written[0]]
    labels.data = data
    layers = []
    if probability and out.foreground:
        layers.append(("probability", out.foreground, dict(colormap="magma", blending="additive",
                                                           contrast_limits=(0.0, 1.0))))
    if uncertainty and out.uncertainty:
        layers.append(("uncertainty", out.uncertainty, dict(colormap="inferno",
                                                            blending="additive", visible=False)))
    for suffix, per_slice, kwargs in layers:
        layer = _get_or_add(viewer, f"{image.name} {suffix}", shape, np.float32, image, "image",
                            **kwargs)
        arr = np.asarray(layer.data)
        for z, values in per_slice.items():
            arr[z if out.is_stack else ...] = values
        done = set(layer.metadata.get(PREDICTED_KEY, [])) | set(per_slice)
        layer.metadata[PREDICTED_KEY] = sorted(int(z) for z in done)
        layer.data = arr
        if suffix == "uncertainty":
            hi = float(arr.max())
            layer.contrast_limits = (0.0, hi if hi > 0 else 1.0)
    return labels


def confirm_targets(labels: Labels | None, slices: Sequence[int]) -> list[int]:
    """Return the slices among ``slices`` that are marked as corrected in ``labels``."""
    if labels is None:
        return []
    marked = set(get_session().corrected(labels))
    return [z for z in slices if z in marked]


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


def layer_is_stack(layer: Any) -> bool:
    """Whether a layer is a ``(Z, Y, X)`` stack."""
    return spatial_ndim(layer) >= 3
