"""Prediction with a bioimage.io model that napari-unet did not write (prediction only).

:class:`BioimageioModel` runs a 2D ``pytorch_state_dict`` or ``torchscript`` model
through bioimage.io's own runtime (``bioimageio.core``), with the pre- and
post-processing its package declares, blockwise where its input sizes are
parameterised. :func:`napari_unet.inference.predict.predict_iter` hands such a model to
:meth:`BioimageioModel.predict_iter`, so the CLI and the Segment dock use it like a
U-Net. It cannot be fine-tuned: asking it for anything training needs raises
:class:`NotFineTunableError` with one line that says so.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..model_record import ModelRecord
from .export import first_error, require_bioimageio

#: Weight formats that bioimage.io's runtime runs here (torch is installed).
SUPPORTED_WEIGHTS = ("torchscript", "pytorch_state_dict")


class NotFineTunableError(ValueError):
    """The model runs for prediction only (a one-line message)."""


class BioimageioModel:
    """A foreign bioimage.io model, for prediction only.

    Parameters
    ----------
    path : path-like
        The package (``.zip``).
    rdf : dict
        Its description, as read by :func:`napari_unet.bioimageio.load.read_rdf`.

    Attributes
    ----------
    record : dict
        ``name``, ``description`` and ``source``, as for a U-Net's training record.
    in_channels, n_classes : int
        Channels of the first input and of the first output (1 when they have none).
    """

    is_bioimageio_runtime = True
    fine_tunable = False

    def __init__(self, path: str | Path, rdf: dict[str, Any]) -> None:
        require_bioimageio()
        from bioimageio.spec import InvalidDescr, load_description

        self.path = Path(path)
        name = str(rdf.get("name") or self.path.stem)
        self.record: dict[str, Any] = ModelRecord(
            name=name, description=str(rdf.get("description", "")), source=str(self.path),
            bioimageio=True).to_dict()
        formats = [w for w in SUPPORTED_WEIGHTS if (rdf.get("weights") or {}).get(w)]
        if not formats:
            raise ValueError(f"{self.path}: napari-unet runs bioimage.io models with "
                             f"{' or '.join(SUPPORTED_WEIGHTS)} weights; this one has "
                             f"{', '.join(rdf.get('weights') or {}) or 'none'}")
        self.weight_format = formats[0]
        try:
            descr = load_description(self.path, perform_io_checks=False)
        except Exception as err:  # noqa: BLE001 - bioimageio raises many kinds
            raise ValueError(f"{self.path}: bioimage.io cannot read it: {_line(err)}") from None
        if isinstance(descr, InvalidDescr):
            raise ValueError(f"{self.path}: not a valid bioimage.io model ({first_error(descr)})")
        if getattr(descr, "format_version", "0.4").startswith("0.4"):
            raise ValueError(f"{self.path}: format {descr.format_version} is not supported; "
                             "convert it to 0.5 (bioimageio update-format)")
        self.descr = descr
        self._in = descr.inputs[0]
        self._out = descr.outputs[0]
        if len(descr.inputs) != 1:
            raise ValueError(f"{self.path}: the model has {len(descr.inputs)} inputs; "
                             "napari-unet runs models with one image input")
        kinds = {str(a.type) for a in self._in.axes}
        spatial = [str(a.id) for a in self._in.axes if str(a.type) == "space"]
        if sorted(spatial) != ["x", "y"] or kinds - {"batch", "channel", "space"}:
            raise ValueError(f"{self.path}: not a 2D image model (input axes "
                             f"{[str(a.id) for a in self._in.axes]})")
        self.in_channels = _channels(self._in)
        self.n_classes = max(2, _channels(self._out))
        self._pipeline: Any = None
        self._device: str | None = None

    def __deepcopy__(self, memo: dict[int, Any]) -> BioimageioModel:
        return self  # nothing in it changes: a copy would be the same predictor

    def __getattr__(self, name: str) -> Any:
        # training code asks for the config, the halo, the weights...: say why not
        if name.startswith("__"):
            raise AttributeError(name)
        raise NotFineTunableError(
            f"{ModelRecord.of(self).name} is a bioimage.io model not written by napari-unet: it runs "
            "for prediction only and cannot be fine-tuned (fine-tune a napari-unet model, or "
            "start a new network)")

    def _get_pipeline(self, device: str) -> Any:
        from bioimageio.core import create_prediction_pipeline

        if self._pipeline is None or self._device != device:
            self._pipeline = create_prediction_pipeline(
                self.descr, devices=[device], weight_format=self.weight_format)
            self._device = device
        return self._pipeline

    def predict_slice(self, image: np.ndarray, device: str = "cpu") -> np.ndarray:
        """Probabilities ``(n_classes, Y, X)`` of one ``(C, Y, X)`` image."""
        from bioimageio.core import Sample, Tensor
        from bioimageio.spec.model.v0_5 import AxisId, ParameterizedSize

        ny, nx = image.shape[-2:]
        tid = self._in.id
        param = [a.id for a in self._in.axes
                 if isinstance(getattr(a, "size", None), ParameterizedSize)]
        if param:  # blocks as large as the image allows (the runtime tiles with them)
            ns = self._block_ns(param, {"y": ny, "x": nx})
            block = self.descr.get_tensor_sizes(ns, 1).inputs[tid]
        else:
            block = {a.id: a.size for a in self._in.axes if isinstance(getattr(a, "size", None),
                                                                      int)}
        # an image smaller than one block is mirrored up to it, the output cropped back
        py, px = (max(0, int(block.get(AxisId(a), 0)) - n) for a, n in (("y", ny), ("x", nx)))
        arr = np.pad(np.asarray(image, np.float32), [(0, 0), (0, py), (0, px)], mode="symmetric")
        x = Tensor.from_numpy(arr[None], dims=("batch", "channel", "y", "x"))
        x = x.transpose([a.id for a in self._in.axes])  # the model's order; singletons as needed
        sample = Sample(members={tid: x}, stat={}, id="napari-unet")
        out = self._get_pipeline(device).predict_sample_with_fixed_blocking(
            sample, input_block_shape={tid: block})
        t = out.members[self._out.id].transpose([AxisId("channel"), AxisId("y"), AxisId("x")])
        data = np.asarray(t.data, np.float32)[:, :ny, :nx]
        if data.shape[-2:] != (ny, nx):
            raise ValueError(f"{ModelRecord.of(self).name}: output {data.shape[-2:]} does not have "
                             f"the input's size {(ny, nx)}; napari-unet cannot place it")
        if data.shape[0] == 1:  # one foreground map: background is its complement
            data = np.concatenate([1.0 - data, data])
        return data.astype(np.float32)

    def _block_ns(self, param: list[Any], lengths: dict[str, int],
                  largest: int = 16) -> dict[Any, int]:
        """Per axis, the largest size parameter ``n <= largest`` whose block fits the image."""
        tid = self._in.id

        def sizes(n: int) -> Any:
            return self.descr.get_tensor_sizes({(tid, a): n for a in param}, 1).inputs[tid]

        table = [sizes(n) for n in range(largest + 1)]
        return {(tid, a): max([0] + [n for n in range(largest + 1)
                                     if table[n][a] <= lengths[str(a)]]) for a in param}

    def predict_iter(self, image: Any, *, channel_axis: int | None = None,
                     slices: Sequence[int] | None = None, device: Any = "auto",
                     uncertainty: bool = False, **_: Any) -> Generator[Any, None, Any]:
        """Like :func:`napari_unet.inference.predict.predict_iter`: one progress event per slice.

        Tiling, TTA and precision options do not apply (bioimage.io's runtime tiles).
        """
        from .. import devices
        from ..inference.inputs import as_image_view
        from ..inference.predict import PredictionResult, Progress
        from ..inference.tta import softmax_entropy

        view = as_image_view(image, self.in_channels, channel_axis)
        zs = view.check_slices(slices)
        dev = devices.resolve_device(device)
        probs = np.zeros((self.n_classes, view.n_slices, *view.yx), np.float32)
        unc = np.zeros((view.n_slices, *view.yx), np.float32) if uncertainty else None
        t0 = time.perf_counter()
        for k, z in enumerate(zs):
            p = self.predict_slice(np.asarray(view.slice(z)), str(dev))
            if p.shape[0] != self.n_classes:
                raise ValueError(f"{ModelRecord.of(self).name}: {p.shape[0]} output channels, "
                                 f"expected {self.n_classes}")
            probs[:, z] = p
            if unc is not None:
                unc[z] = softmax_entropy(p)
            yield Progress(k + 1, len(zs), z, time.perf_counter() - t0)
        if not view.is_stack:
            probs, unc = probs[:, 0], (unc[0] if unc is not None else None)
        return PredictionResult(probs, unc, zs, str(dev), "fp32")


def _channels(descr: Any) -> int:
    for a in descr.axes:
        if str(a.type) == "channel":
            return len(a.channel_names)
    return 1


def _line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
