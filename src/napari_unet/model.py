"""The U-Net of Ronneberger et al. (2015) with its tiling geometry.

The network is built from small blocks (:class:`DoubleConv`, :class:`Down`, :class:`Up`).
With ``padding="valid"`` (the paper) every 3x3 convolution shrinks the map by 2 px, so
the output is smaller than the input by ``2 * halo`` and only some input sizes are valid
(every 2x2 pooling must see an even size). :class:`UNet` derives that geometry from its
own configuration: see :meth:`UNet.output_size`, :meth:`UNet.valid_input_size` and
:attr:`UNet.halo`.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from .normalize import Normalization

#: Accepted range of each integer field of :class:`UNetConfig` (inclusive).
LIMITS = {"in_channels": (1, 64), "n_classes": (1, 256), "depth": (1, 8),
          "base_channels": (1, 512)}
#: Largest network accepted (parameters; 1 GiB of float32 weights).
MAX_PARAMETERS = 2**28


def parameter_count(in_channels: int, n_classes: int, depth: int, base_channels: int) -> int:
    """Number of weights and biases of a :class:`UNet`, computed without building it."""
    def conv(c_in: int, c_out: int, k: int) -> int:
        return c_in * c_out * k * k + c_out

    def double(c_in: int, c_out: int) -> int:
        return conv(c_in, c_out, 3) + conv(c_out, c_out, 3)

    w = [base_channels * 2**i for i in range(depth)]
    n = double(in_channels, w[0]) + conv(w[0], n_classes, 1)
    for i in range(depth - 1):
        n += double(w[i], w[i + 1]) + conv(w[i + 1], w[i], 2) + double(2 * w[i], w[i])
    return n


@dataclass
class UNetConfig:
    """Architecture, normalisation and class names: everything needed to rebuild a model.

    Parameters
    ----------
    in_channels : int
        Number of input channels.
    n_classes : int
        Number of output classes (2: background and foreground).
    depth : int
        Number of resolution levels (5 in the paper: 4 poolings).
    base_channels : int
        Feature channels at the first level (64 in the paper); doubled at each level.
    padding : str
        ``"valid"`` (unpadded convolutions, the paper) or ``"same"``.
    dropout : float
        Dropout probability at the end of the contracting path.
    normalization : dict
        Input normalisation, see :class:`napari_unet.normalize.Normalization`.
    class_names : list of str
        One name per output class.
    input_scale : float
        Images are resampled by this factor before the network and the probabilities back
        to the image's grid (:mod:`napari_unet.inference.rescale`): 0.5 for objects twice
        the size of those the network learned. Set by a fine-tuning round.
    """

    in_channels: int = 1
    n_classes: int = 2
    depth: int = 5
    base_channels: int = 64
    padding: str = "valid"
    dropout: float = 0.5
    normalization: dict[str, Any] = field(default_factory=lambda: asdict(Normalization()))
    class_names: list[str] = field(default_factory=list)
    input_scale: float = 1.0

    def __post_init__(self) -> None:
        if self.padding not in ("valid", "same"):
            raise ValueError(f"padding must be 'valid' or 'same', got {self.padding!r}")
        for name, (lo, hi) in LIMITS.items():
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral):
                raise ValueError(f"{name} must be an integer, got {v!r}")
            if not lo <= v <= hi:
                raise ValueError(f"{name} must be in [{lo}, {hi}], got {v}")
            setattr(self, name, int(v))
        n = parameter_count(self.in_channels, self.n_classes, self.depth, self.base_channels)
        if n > MAX_PARAMETERS:
            raise ValueError(f"network too large: {n:,} parameters (depth {self.depth}, "
                             f"base_channels {self.base_channels}; at most {MAX_PARAMETERS:,})")
        if (isinstance(self.dropout, bool) or not isinstance(self.dropout, numbers.Real)
                or not 0 <= self.dropout < 1):
            raise ValueError(f"dropout must be a number in [0, 1), got {self.dropout!r}")
        if (isinstance(self.input_scale, bool) or not isinstance(self.input_scale, numbers.Real)
                or not 0.1 <= self.input_scale <= 10):
            raise ValueError(f"input_scale must be a number in [0.1, 10], got {self.input_scale!r}")
        self.input_scale = float(self.input_scale)
        if not isinstance(self.normalization, dict):
            raise ValueError(f"normalization must be a dict, got {type(self.normalization).__name__}")
        if not isinstance(self.class_names, (list, tuple)) or not all(
                isinstance(c, str) for c in self.class_names):
            raise ValueError("class_names must be a list of strings")
        self.class_names = list(self.class_names)
        if not self.class_names:
            names = ["background", "foreground"] if self.n_classes == 2 else []
            self.class_names = names or [f"class_{i}" for i in range(self.n_classes)]
        if len(self.class_names) != self.n_classes:
            raise ValueError("class_names must have one name per class")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain Python types (safe to serialise)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> UNetConfig:
        """Build a configuration from :meth:`to_dict` output, ignoring unknown keys.

        Raises
        ------
        ValueError
            If ``d`` is not a dict or a field is out of bounds (see :data:`LIMITS`).
        """
        if not isinstance(d, dict):
            raise ValueError(f"a model config must be a dict, got {type(d).__name__}")
        known = {k: v for k, v in d.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class DoubleConv(nn.Sequential):
    """Two 3x3 convolutions, each followed by ReLU.

    Shapes: ``(N, C_in, H, W) -> (N, C_out, H - 4, W - 4)`` when unpadded,
    ``(N, C_out, H, W)`` with ``padding="same"``.
    """

    def __init__(self, c_in: int, c_out: int, pad: int) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, padding=pad),
            nn.ReLU(inplace=True),
            nn.Conv2d(c_out, c_out, 3, padding=pad),
            nn.ReLU(inplace=True),
        )


class Down(nn.Sequential):
    """2x2 max pooling (stride 2) then :class:`DoubleConv`: ``(N, C, H, W) -> (N, 2C, H/2-4, W/2-4)``."""

    def __init__(self, c_in: int, c_out: int, pad: int) -> None:
        super().__init__(nn.MaxPool2d(2), DoubleConv(c_in, c_out, pad))


class Up(nn.Module):
    """2x2 up-convolution halving the channels, concatenation with the cropped skip, DoubleConv."""

    def __init__(self, c_in: int, c_out: int, pad: int) -> None:
        super().__init__()
        self.up = nn.ConvTranspose2d(c_in, c_out, 2, stride=2)
        self.conv = DoubleConv(2 * c_out, c_out, pad)

    def forward(self, x: torch.Tensor, skip: torch.Tensor) -> torch.Tensor:
        """Upsample ``x``, centre-crop ``skip`` to it, concatenate and convolve.

        Shapes: ``x (N, C_in, h, w)``, ``skip (N, C_out, H, W)`` with ``H >= 2h`` ->
        ``(N, C_out, 2h - 4, 2w - 4)`` (unpadded).
        """
        x = self.up(x)
        dh = (skip.shape[-2] - x.shape[-2]) // 2
        dw = (skip.shape[-1] - x.shape[-1]) // 2
        skip = skip[..., dh : dh + x.shape[-2], dw : dw + x.shape[-1]]
        return self.conv(torch.cat([skip, x], dim=1))


class UNet(nn.Module):
    """U-Net (Ronneberger et al., 2015).

    Parameters
    ----------
    config : UNetConfig, optional
        Architecture; keyword arguments override its fields, e.g. ``UNet(base_channels=16)``.
    **kwargs
        Fields of :class:`UNetConfig`.

    Examples
    --------
    >>> net = UNet(depth=5, base_channels=64)      # the paper's 23-layer network
    >>> net.output_size(572), net.halo
    (388, 92)
    """

    def __init__(self, config: UNetConfig | None = None, **kwargs: Any) -> None:
        super().__init__()
        if config is None:
            config = UNetConfig(**kwargs)
        elif kwargs:
            config = UNetConfig.from_dict({**config.to_dict(), **kwargs})
        self.config = config
        pad = 0 if config.padding == "valid" else 1
        widths = [config.base_channels * 2**i for i in range(config.depth)]
        self.inc = DoubleConv(config.in_channels, widths[0], pad)
        self.downs = nn.ModuleList(Down(widths[i], widths[i + 1], pad) for i in range(config.depth - 1))
        self.dropout = nn.Dropout2d(config.dropout) if config.dropout > 0 else nn.Identity()
        self.ups = nn.ModuleList(Up(widths[i + 1], widths[i], pad) for i in reversed(range(config.depth - 1)))
        self.head = nn.Conv2d(widths[0], config.n_classes, 1)
        self.record: dict[str, Any] = {}
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """He initialisation: normal with std = sqrt(2 / N), N = fan-in of each layer."""
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)):
                fan_in = m.weight.shape[1] * m.weight.shape[2] * m.weight.shape[3]
                if isinstance(m, nn.ConvTranspose2d):
                    fan_in = m.weight.shape[0] * m.weight.shape[2] * m.weight.shape[3]
                nn.init.normal_(m.weight, 0.0, math.sqrt(2.0 / fan_in))
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Compute class scores (logits).

        Parameters
        ----------
        x : torch.Tensor
            ``(N, in_channels, H, W)``; ``H`` and ``W`` must be valid input sizes
            (:meth:`valid_input_size`).

        Returns
        -------
        torch.Tensor
            ``(N, n_classes, H - 2*halo, W - 2*halo)`` for ``padding="valid"``,
            ``(N, n_classes, H, W)`` for ``"same"``.
        """
        skips = [self.inc(x)]
        for down in self.downs:
            skips.append(down(skips[-1]))
        y = self.dropout(skips.pop())
        for up in self.ups:
            y = up(y, skips.pop())
        return self.head(y)

    # --- geometry -----------------------------------------------------------------------
    @property
    def in_channels(self) -> int:
        """Number of input channels."""
        return self.config.in_channels

    @property
    def n_classes(self) -> int:
        """Number of output classes."""
        return self.config.n_classes

    @property
    def stride(self) -> int:
        """Total down-sampling factor ``2**(depth-1)``; tiles are aligned to it."""
        return 2 ** (self.config.depth - 1)

    @property
    def shrink(self) -> int:
        """Pixels lost per side by one 3x3 convolution (1 unpadded, 0 padded)."""
        return 1 if self.config.padding == "valid" else 0

    def output_size(self, n: int) -> int:
        """Output length for input length ``n``; raises ``ValueError`` if ``n`` is not valid."""
        s, c, d = n, 4 * self.shrink, self.config.depth
        for _ in range(d - 1):
            s -= c
            if s <= 0 or s % 2:
                raise ValueError(f"input size {n} is not valid for this U-Net")
            s //= 2
        s -= c
        if s <= 0:
            raise ValueError(f"input size {n} is too small for this U-Net")
        for _ in range(d - 1):
            s = 2 * s - c
        return s

    def input_size(self, out: int) -> int:
        """Input length whose output is ``out`` (inverse of :meth:`output_size`)."""
        s, c, d = out, 4 * self.shrink, self.config.depth
        for _ in range(d - 1):
            if (s + c) % 2:
                raise ValueError(f"output size {out} is not reachable")
            s = (s + c) // 2
        s += c
        for _ in range(d - 1):
            s = 2 * s + c
        return s

    def valid_input_size(self, n: int) -> int:
        """Smallest valid input length that is ``>= n``."""
        m = max(int(n), 1)
        while True:
            try:
                self.output_size(m)
                return m
            except ValueError:
                m += 1

    @property
    def halo(self) -> int:
        """Context needed per side: ``(input - output) / 2``.

        For ``padding="valid"`` this is exact (92 px for depth 5). For ``"same"`` the zero
        padding of every convolution contaminates a band at the tile edge that the
        up-convolutions widen by up to one stride; the halo is the unpadded one plus
        :attr:`stride`, rounded up to a multiple of it, so that tiles agree with a single
        pass over the whole image.
        """
        valid_halo = self._valid_halo()
        if self.config.padding == "valid":
            return valid_halo
        return -(-(valid_halo + self.stride) // self.stride) * self.stride

    def _valid_halo(self) -> int:
        d = self.config.depth
        # each level l (0-based) loses 4 px at scale 2**l on the way down and up
        return sum(2 * 2**level for level in range(d - 1)) * 2 + 2 * 2 ** (d - 1)

    def count_conv_layers(self) -> int:
        """Number of convolutional layers (3x3, up-convolutions and the final 1x1)."""
        return sum(isinstance(m, (nn.Conv2d, nn.ConvTranspose2d)) for m in self.modules())


def crop_to(x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Centre-crop the last two axes of ``x`` to ``size``."""
    dh = (x.shape[-2] - size[0]) // 2
    dw = (x.shape[-1] - size[1]) // 2
    return x[..., dh : dh + size[0], dw : dw + size[1]]
