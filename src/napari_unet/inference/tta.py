"""Test-time augmentation: the softmax averaged over the 8 dihedral transforms, and entropy."""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
import torch

from ..model import UNet

# the 8 dihedral transforms as (k rot90, flip) pairs, applied to the last two axes
DIHEDRAL = [(k, f) for f in (False, True) for k in range(4)]


def forward_tta(
    model: UNet, x: torch.Tensor, tta: bool, pool: Executor | None = None
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Softmax of ``model(x)``, averaged over the dihedral group when ``tta``; also its spread.

    With ``pool``, the 8 transforms run side by side (summed in the same order either way).
    """
    if not tta:
        return torch.softmax(model(x).float(), dim=1), None

    def one(transform: tuple[int, bool]) -> torch.Tensor:
        k, flip = transform
        t = torch.flip(x, dims=(-1,)) if flip else x
        t = torch.rot90(t, k, dims=(-2, -1))
        with torch.inference_mode():
            p = torch.softmax(model(t.contiguous(memory_format=torch.channels_last)).float(), dim=1)
        p = torch.rot90(p, -k, dims=(-2, -1))
        return torch.flip(p, dims=(-1,)) if flip else p

    acc, acc2 = None, None
    for p in (pool.map(one, DIHEDRAL) if pool is not None else map(one, DIHEDRAL)):
        acc = p if acc is None else acc + p
        acc2 = p * p if acc2 is None else acc2 + p * p
    mean = acc / len(DIHEDRAL)
    var = (acc2 / len(DIHEDRAL) - mean * mean).clamp_min(0)
    return mean, var.sqrt()[:, -1]


def softmax_entropy(p: np.ndarray) -> np.ndarray:
    """Softmax entropy over axis 0, in nats."""
    return -(p * np.log(np.clip(p, 1e-8, 1.0))).sum(axis=0).astype(np.float32)
