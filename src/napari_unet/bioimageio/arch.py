"""Self-contained U-Net architecture for bioimage.io packages (imports only torch).

This file is copied as is into every package that :mod:`napari_unet.bioimageio.export`
writes, as the architecture of the ``pytorch_state_dict`` weights, so a bioimage.io
runtime can rebuild the network without napari-unet. It must never import anything but
torch. Its module names (``inc``, ``downs``, ``ups``, ``head``) match
:class:`napari_unet.model.UNet`, so the same state dict loads into both.

:class:`BioimageioUNet` mirror-pads its input so that its output has the input's size:
by the network's halo on every side, plus up to one stride on the right/bottom to reach a
size the network accepts, then crops the result back. The package declares the halo on
the output, so blockwise prediction crops the mirrored band away.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by ReLU."""

    def __init__(self, c_in: int, c_out: int, pad: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=pad),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max pooling then :class:`DoubleConv`."""

    def __init__(self, c_in: int, c_out: int, pad: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(c_in, c_out, pad))


class Up(nn.Module):
    """2x2 up-convolution, concatenation with the centre-cropped skip, :class:`DoubleConv`."""

    def __init__(self, c_in: int, c_out: int, pad: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = DoubleConv(2 * c_out, c_out, pad)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``, crop ``skip`` to it, concatenate and convolve."""
        x = self.up(x)
        dh = (skip.shape[-2] - x.shape[-2]) // 2
        dw = (skip.shape[-1] - x.shape[-1]) // 2
        skip = skip[:, :, dh : dh + x.shape[-2], dw : dw + x.shape[-1]]
        return self.conv(torch.cat([skip, x], dim=1))


def _halo(depth: int, padding: str) -> int:
    valid = sum(2 * 2**level for level in range(depth - 1)) * 2 + 2 * 2 ** (depth - 1)
    if padding == "valid":
        return valid
    stride = 2 ** (depth - 1)
    return -(-(valid + stride) // stride) * stride


def _gaussian(sigma: float) -> torch.Tensor:
    # scipy.ndimage.gaussian_filter's kernel (truncate 4)
    r = int(4.0 * sigma + 0.5)
    x = torch.arange(-r, r + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return k / k.sum()


class BioimageioUNet(nn.Module):
    """U-Net (Ronneberger et al., 2015) whose output has the size of its input.

    Parameters
    ----------
    in_channels, n_classes, depth, base_channels : int
        Architecture, as in ``napari_unet.model.UNetConfig``.
    padding : str
        ``"valid"`` (unpadded convolutions) or ``"same"``.
    input_scale : float
        The input is resampled (bilinear) by this factor before the network and the class
        scores back to the input's size (``napari_unet.model.UNetConfig.input_scale``).
    smooth : float
        Width of a Gaussian (edges mirrored) applied to the network's input after the
        resampling (``napari_unet.normalize.Normalization.smooth``; 0: none).

    Notes
    -----
    ``forward`` takes ``(N, in_channels, H, W)`` and returns class scores (logits)
    ``(N, n_classes, H, W)``; H and W must each exceed :attr:`halo` + :attr:`stride`.
    """

    def __init__(self, in_channels: int = 1, n_classes: int = 2, depth: int = 5,
                 base_channels: int = 64, padding: str = "valid", input_scale: float = 1.0,
                 smooth: float = 0.0) -> None:
        super().__init__()
        pad = 0 if padding == "valid" else 1
        widths = [base_channels * 2**i for i in range(depth)]
        self.inc = DoubleConv(in_channels, widths[0], pad)
        self.downs = nn.ModuleList([Down(widths[i], widths[i + 1], pad) for i in range(depth - 1)])
        self.ups = nn.ModuleList([Up(widths[i + 1], widths[i], pad)
                                  for i in reversed(range(depth - 1))])
        self.head = nn.Conv2d(widths[0], n_classes, 1)
        self.depth = depth
        self.shrink = 4 if padding == "valid" else 0
        self.stride = 2 ** (depth - 1)
        self.halo = _halo(depth, padding)
        self.offset = 0 if padding == "valid" else self.halo
        self.input_scale = float(input_scale)
        self.smooth = float(smooth)
        self.register_buffer("gauss", _gaussian(smooth) if smooth > 0 else torch.ones(1),
                             persistent=False)

    def valid_size(self, n: int) -> int:
        """Smallest input length ``>= n`` that the network accepts."""
        m = n
        while not self._accepts(m):
            m += 1
        return m

    def _accepts(self, n: int) -> bool:
        s = n
        for _ in range(self.depth - 1):
            s -= self.shrink
            if s <= 0 or s % 2 == 1:
                return False
            s = s // 2
        return s - self.shrink > 0

    def _mirror(self, x: torch.Tensor, top: int, bottom: int, left: int, right: int) -> torch.Tensor:
        # reflect padding needs pad < size: pad in steps on small inputs
        while top + bottom + left + right > 0:
            h, w = x.shape[-2], x.shape[-1]
            t, b = min(top, h - 1), min(bottom, h - 1)
            le, r = min(left, w - 1), min(right, w - 1)
            x = F.pad(x, [le, r, t, b], mode="reflect")
            top, bottom, left, right = top - t, bottom - b, left - le, right - r
        return x

    def core(self, x: torch.Tensor) -> torch.Tensor:
        """The network itself on an input of a valid size (no padding, no crop)."""
        skips: list[torch.Tensor] = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = skips.pop()
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores with the input's spatial size (resampling, mirror padding, network, crop)."""
        s = self.input_scale
        if abs(s - 1.0) < 0.05:
            return self.same_size(x)
        h, w = x.shape[-2], x.shape[-1]
        size = [max(1, int(h * s + 0.5)), max(1, int(w * s + 0.5))]
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=s < 1)
        # napari-unet resamples the probabilities, not the scores: the log of the resampled
        # probabilities goes through the package's softmax back to exactly those
        p = F.interpolate(torch.softmax(self.same_size(x), dim=1), size=[h, w], mode="bilinear",
                          align_corners=False, antialias=s > 1)
        return torch.log(p.clamp_min(1e-12))

    def same_size(self, x: torch.Tensor) -> torch.Tensor:
        """Class scores with the input's spatial size (mirror padding, network, crop)."""
        if self.smooth > 0:
            c, r = x.shape[1], (self.gauss.numel() - 1) // 2
            x = self._mirror(x, r, r, r, r)
            x = F.conv2d(x, self.gauss.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)
            x = F.conv2d(x, self.gauss.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
        h, w = x.shape[-2], x.shape[-1]
        hh = self.valid_size(h + 2 * self.halo)
        ww = self.valid_size(w + 2 * self.halo)
        x = self._mirror(x, self.halo, hh - h - self.halo, self.halo, ww - w - self.halo)
        y = self.core(x)
        o = self.offset
        return y[:, :, o : o + h, o : o + w]
