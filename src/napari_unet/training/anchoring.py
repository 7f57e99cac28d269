"""Keep a model's predictions on unannotated slices while it fine-tunes.

Fine-tuning on one to three corrected slices pulls a good starter model towards those
slices: on the ISBI benchmark its held-out error grew round after round. *Anchoring*
(learning without forgetting, Li & Hoiem 2016) adds to each step the KL divergence between
the network's output on a crop of an unannotated slice of the user's data and its own
prediction there before fine-tuning. Corrections still teach; the rest of the stack stays
as it was unless the corrections say otherwise.
"""

from __future__ import annotations

from collections.abc import Generator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..inference.inputs import as_image_view
from ..jobs import Stage
from ..normalize import Normalization
from .samples import pad_to, padded_slice


@dataclass
class Anchors:
    """Unannotated slices and the model's predictions on them before fine-tuning."""

    images: list[np.ndarray]  # (C, Y + 2h, X + 2h) normalised, mirrored by the halo
    probs: list[np.ndarray]  # (K, Y, X) float32: the output of ``images``


def prepare_anchors(model: Any, slices: Sequence[Any], channel_axis: int | None = None,
                    device: str | torch.device = "auto", window: int = 768) -> Anchors:
    """Normalise ``slices`` as training does and predict them with ``model`` as it is now.

    Only a central window of each slice (at most ``window`` pixels per side) is kept, and the
    reference is one plain forward pass of the network on it (no TTA): the cost before the
    first step stays under a second per slice on a CPU, whatever the slice size.

    Parameters
    ----------
    model : UNet
        The model about to be fine-tuned (its stored normalisation is applied to the whole
        slice, as for training samples).
    slices : sequence of array-like
        2D images (or one image with channels, as ``channel_axis`` says), not annotated.
    channel_axis : int, optional
        Channel axis of each slice.
    device : str or torch.device
        Where the reference predictions run.
    window : int
        Largest side of the kept window, in output pixels.

    Returns
    -------
    Anchors
    """
    from .. import devices

    norm = Normalization.from_dict(model.config.normalization)
    h, dev = model.halo, devices.resolve_device(device)
    model.to(dev).eval()
    images, probs = [], []
    for s in slices:
        view = as_image_view(s, model.in_channels, channel_axis)
        if view.is_stack:
            raise ValueError(f"anchor slices must be single 2D images, got shape {np.shape(s)}")
        padded = padded_slice(view, 0, norm, h).astype(np.float32)
        # the window's origin is a multiple of the network stride, as are the crops' offsets
        # in it (:func:`anchor_crop`): a crop's output then equals the window's there
        st = model.stride
        (ny, y0), (nx, x0) = ((min(n, window), (n - min(n, window)) // 2 // st * st)
                              for n in view.yx)
        win = np.ascontiguousarray(padded[:, y0 : y0 + ny + 2 * h, x0 : x0 + nx + 2 * h])
        images.append(win)
        probs.append(_window_probs(model, win, dev))
    return Anchors(images, probs)


def _window_probs(model: Any, win: np.ndarray, dev: Any) -> np.ndarray:
    """One plain forward pass on a normalised window mirrored by the halo: ``(K, Y, X)``."""
    h = model.halo
    ny, nx = win.shape[1] - 2 * h, win.shape[2] - 2 * h
    my, mx = model.valid_input_size(ny + 2 * h), model.valid_input_size(nx + 2 * h)
    x = pad_to(win, my, mx)
    with torch.inference_mode():
        p = torch.softmax(model(torch.from_numpy(x)[None].to(dev)).float(), dim=1)[0]
    oy, ox = h - (my - model.output_size(my)) // 2, h - (mx - model.output_size(mx)) // 2
    return p[:, oy : oy + ny, ox : ox + nx].cpu().numpy()


def anchor_predictions(model: Any, anchors: Anchors, device: str | torch.device = "auto",
                       ) -> list[np.ndarray]:
    """``model``'s probabilities on the anchors' windows, ``(K, Y, X)`` each.

    One plain forward pass per window, as :func:`prepare_anchors` made the references.
    """
    from .. import devices

    dev = devices.resolve_device(device)
    model.to(dev).eval()
    return [_window_probs(model, win, dev) for win in anchors.images]


def anchor_crop(anchors: Anchors, in_tile: int, halo: int, rng: np.random.Generator,
                stride: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """A random input crop of one anchor slice and the reference probabilities of its output.

    Returns ``(C, in_tile, in_tile)`` and ``(K, in_tile - 2 halo, in_tile - 2 halo)``; slices
    smaller than the crop are mirrored. Offsets are multiples of ``stride`` (the network's),
    so that the network sees the crop with the pooling phase of the reference pass.
    """
    k = int(rng.integers(len(anchors.images)))
    out = in_tile - 2 * halo
    img, prob = pad_to(anchors.images[k], in_tile, in_tile), pad_to(anchors.probs[k], out, out)
    y = stride * int(rng.integers(0, min(img.shape[1] - in_tile, prob.shape[1] - out) // stride + 1))
    x = stride * int(rng.integers(0, min(img.shape[2] - in_tile, prob.shape[2] - out) // stride + 1))
    return (np.ascontiguousarray(img[:, y : y + in_tile, x : x + in_tile]),
            np.ascontiguousarray(prob[:, y : y + out, x : x + out]))


def anchor_loss(logits: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Mean per-pixel KL divergence from ``reference`` probabilities to ``softmax(logits)``.

    Both ``(N, K, Y, X)``; zero when the network still predicts what it did.
    """
    logp = F.log_softmax(logits.float(), dim=1)
    q = reference.float().clamp_min(1e-6)
    return (q * (q.log() - logp)).sum(dim=1).mean()


def blend_weights(model: torch.nn.Module, reference: torch.nn.Module, share: float) -> None:
    """Move ``model``'s weights back towards ``reference``'s, in place.

    Every floating-point tensor of the state becomes ``share * model + (1 - share) *
    reference`` (weight-space ensembling, WiSE-FT, Wortsman et al. 2022): a fine-tuned
    network and the one it started from lie in one basin, and the points between them keep
    what the start knew while taking part of the fine-tuning's gain. Refining the ISBI
    starter on one or two in-domain slices, the trained weights lost 0.005 (adapted Rand
    error) on unseen slices; the half-way blend was even (0.0477 against 0.0473; session 14).

    Parameters
    ----------
    model : torch.nn.Module
        The fine-tuned network (modified).
    reference : torch.nn.Module
        The network it started from (same architecture; not modified).
    share : float
        The fine-tuned share, in [0, 1] (1 leaves ``model`` as it is).

    Raises
    ------
    ValueError
        If ``share`` is outside [0, 1] or the two states do not match.
    """
    if not 0.0 <= share <= 1.0:
        raise ValueError(f"the blend share must be in [0, 1], got {share}")
    mine, ref = model.state_dict(), reference.state_dict()
    if mine.keys() != ref.keys() or any(mine[k].shape != ref[k].shape for k in mine):
        raise ValueError("cannot blend networks of different architectures")
    with torch.no_grad():
        for k, v in mine.items():
            if v.is_floating_point():
                v.mul_(share).add_(ref[k].to(v.device, v.dtype), alpha=1.0 - share)


def anchors_one_by_one(model: Any, anchors: Sequence[np.ndarray], device: str,
                       ) -> Generator[Stage, None, Anchors]:
    """The start model's predictions on the uncorrected slices, one at a time (stoppable)."""
    prepared = Anchors([], [])
    for i, a in enumerate(anchors, 1):
        yield Stage(f"anchoring on uncorrected slice {i}/{len(anchors)}")
        one = prepare_anchors(model, [a if a.ndim == 3 else a[None]], 0, device)
        prepared.images += one.images
        prepared.probs += one.probs
    return prepared
