"""Export a model as a bioimage.io model package (spec 0.5), for the BioImage Model Zoo.

The package (a zip) holds ``rdf.yaml``; the weights twice, as a plain state dict with the
self-contained architecture file :mod:`napari_unet.bioimageio.arch` and as TorchScript
(``parent: pytorch_state_dict``); test input and output tensors (``.npy``) and sample
images (``.tif``); a README with a "Validation" section; and a cover image.

The network's input is normalised by ``scale_range`` with the model's percentiles (then
``scale_linear`` for an inverted polarity); its output, logits, goes through ``softmax``.
The unpadded network is wrapped so that its output has the input's size (mirror padding),
and the output declares the network's halo, which blockwise prediction crops.

``config.napari_unet`` keeps the architecture, post-processing settings and training
record (the fine-tuning lineage), so :func:`napari_unet.bioimageio.load.load_package`
reads an export back as a :class:`~napari_unet.model.UNet` that can be fine-tuned again.
Needs the optional extra: ``pip install "napari-unet[bioimageio]"``.
"""

from __future__ import annotations

import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import __version__
from ..model import UNet, parameter_count
from ..model_record import ModelRecord
from ..normalize import Normalization
from ..outputs import atomic_output, check_output

#: Key of napari-unet's own section in the package's ``config``.
CONFIG_KEY = "napari_unet"
FORMAT = "napari-unet/bioimageio-v1"
ARCH_FILE = "napari_unet_arch.py"
CITE = [{"text": "Ronneberger, Fischer and Brox. U-Net: Convolutional Networks for Biomedical "
                 "Image Segmentation. MICCAI 2015", "doi": "10.1007/978-3-319-24574-4_28"}]
EXTRA_HINT = 'pip install "napari-unet[bioimageio]"'


class MissingExtraError(ValueError):
    """bioimageio.core / bioimageio.spec are not installed (a one-line message)."""


def require_bioimageio() -> None:
    """Raise :class:`MissingExtraError` unless bioimageio.spec and bioimageio.core import."""
    try:
        import bioimageio.core  # noqa: F401
        import bioimageio.spec  # noqa: F401
    except ImportError as err:
        raise MissingExtraError(f"bioimage.io packages need the optional extra ({err.name} is "
                                f"missing): {EXTRA_HINT}") from None


def _plain(x: Any) -> Any:
    """Plain YAML types: numpy scalars to Python, tuples to lists, NaN/inf to None."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if isinstance(x, np.generic):
        x = x.item()
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if x is None or isinstance(x, (bool, int, float, str)):
        return x
    return str(x)


def _identifier(text: str, fallback: str) -> str:
    s = re.sub(r"\W+", "_", str(text)).strip("_")
    return s if s and not s[0].isdigit() else fallback


def package_name(text: str) -> str:
    """A name bioimage.io accepts (letters, digits, ``_+- ()``, 5 to 128 characters)."""
    s = re.sub(r"[^A-Za-z0-9_+\- ()]+", "-", str(text)).strip(" -") or "napari-unet model"
    s = s if len(s) >= 5 else f"napari-unet {s}"
    return s[:128]


def input_geometry(model: UNet) -> tuple[int, int]:
    """``(min, step)`` of the package's input sizes: at least 2 halos plus one stride.

    In the input's pixels: a model that resamples its input by ``s`` needs ``1/s`` times more.
    """
    step = model.stride
    need = (2 * model.halo + step) / min(1.0, model.config.input_scale)
    return -(-int(np.ceil(need)) // step) * step, step


def output_halo(model: UNet) -> int:
    """The network's halo in the input's pixels (its input resampled by ``input_scale``)."""
    return int(np.ceil(model.halo / model.config.input_scale))


def preprocessing(norm: Normalization) -> list[dict[str, Any]]:
    """The bioimage.io preprocessing equal to ``norm`` (per image and channel)."""
    steps: list[dict[str, Any]] = []
    if norm.mode in ("percentile", "minmax"):
        lo, hi = (norm.low, norm.high) if norm.mode == "percentile" else (0.0, 100.0)
        steps.append({"id": "scale_range", "kwargs": {
            "axes": ["y", "x"], "min_percentile": float(lo), "max_percentile": float(hi),
            "eps": 1e-6}})
    elif norm.mode == "fixed":
        steps.append({"id": "scale_linear", "kwargs": {
            "gain": 1.0 / float(norm.scale), "offset": -float(norm.offset) / float(norm.scale)}})
    elif norm.mode != "none":
        raise ValueError(f"cannot export normalisation mode {norm.mode!r}")
    if norm.invert:
        one = 0.0 if norm.mode in ("fixed", "none") else 1.0
        steps.append({"id": "scale_linear", "kwargs": {"gain": -1.0, "offset": one}})
    return steps or [{"id": "ensure_dtype", "kwargs": {"dtype": "float32"}}]


def _preprocess(x: np.ndarray, norm: Normalization) -> np.ndarray:
    """``(C, Y, X)`` float32 through the declared preprocessing, computed as bioimage.io does."""
    x = x.astype(np.float32)
    if norm.mode in ("percentile", "minmax"):
        lo_p, hi_p = (norm.low, norm.high) if norm.mode == "percentile" else (0.0, 100.0)
        lo = np.percentile(x, lo_p, axis=(1, 2), keepdims=True)
        hi = np.percentile(x, hi_p, axis=(1, 2), keepdims=True)
        x = ((x - lo) / (hi - lo + 1e-6)).astype(np.float32)
    elif norm.mode == "fixed":
        x = (x - np.float32(norm.offset)) / np.float32(norm.scale)
    if norm.invert:
        x = np.float32(0.0 if norm.mode in ("fixed", "none") else 1.0) - x
    return x.astype(np.float32)


def _default_sample(model: UNet) -> np.ndarray:
    from .._sample_data import load_nuclei

    image = load_nuclei()[0][0].astype(np.float32)
    return np.repeat(image[None], model.in_channels, axis=0)


def test_input(model: UNet, sample: np.ndarray | None = None, size: int = 256) -> np.ndarray:
    """``(1, C, Y, X)`` float32 test input for the package.

    ``sample`` (default: a shipped nuclei image) is cropped or mirrored to the largest
    accepted size ``<= size`` (at least the minimum).
    """
    img = _default_sample(model) if sample is None else np.asarray(sample, dtype=np.float32)
    if img.ndim == 2:
        img = img[None]
    if img.ndim != 3 or img.shape[0] != model.in_channels:
        raise ValueError(f"the sample must be (Y, X) or ({model.in_channels}, Y, X) for this "
                         f"model, got shape {img.shape}")
    lo, step = input_geometry(model)
    sizes = []
    for n in img.shape[1:]:
        k = max(0, (min(n, size) - lo) // step)
        sizes.append(lo + k * step)
    pad = [(0, 0)] + [(0, max(0, s - n)) for s, n in zip(sizes, img.shape[1:])]
    img = np.pad(img, pad, mode="symmetric")[:, : sizes[0], : sizes[1]]
    return np.ascontiguousarray(img[None], dtype=np.float32)


def arch_kwargs(model: UNet) -> dict[str, Any]:
    """Keyword arguments of :class:`napari_unet.bioimageio.arch.BioimageioUNet` for ``model``."""
    c = model.config
    return {"in_channels": c.in_channels, "n_classes": c.n_classes, "depth": c.depth,
            "base_channels": c.base_channels, "padding": c.padding,
            "input_scale": c.input_scale,
            "smooth": float(c.normalization.get("smooth", 0.0) or 0.0)}


def build_network(model: UNet) -> torch.nn.Module:
    """The packaged network (mirror padding, same-size output) with ``model``'s weights."""
    from .arch import BioimageioUNet

    net = BioimageioUNet(**arch_kwargs(model))
    net.load_state_dict({k: v.detach().cpu().float() for k, v in model.state_dict().items()})
    return net.eval()


def _write_files(model: UNet, folder: Path, sample: np.ndarray | None) -> dict[str, Any]:
    import imageio.v3 as iio
    import tifffile

    from . import arch as bioimageio_arch

    norm = Normalization.from_dict(model.config.normalization)
    net = build_network(model)
    shutil.copyfile(bioimageio_arch.__file__, folder / ARCH_FILE)
    torch.save(net.state_dict(), folder / "weights.pt")
    torch.jit.script(net).save(str(folder / "weights.torchscript.pt"))
    x = test_input(model, sample)
    with torch.no_grad():
        logits = net(torch.from_numpy(_preprocess(x[0], norm)[None]))
    y = torch.softmax(logits.float(), dim=1).numpy().astype(np.float32)
    np.save(folder / "test_input.npy", x)
    np.save(folder / "test_output.npy", y)
    tifffile.imwrite(folder / "sample_input.tif", x[0, 0])
    tifffile.imwrite(folder / "sample_output.tif", y[0, -1])
    img = x[0, 0]
    lo, hi = np.percentile(img, (1, 99.8))
    left = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    cover = (np.concatenate([left, y[0, -1]], axis=1) * 255).astype(np.uint8)
    iio.imwrite(folder / "cover.png", cover)
    return {"test_output_range": [float(y.min()), float(y.max())], "test_shape": list(x.shape)}


def _readme(model: UNet, name: str, info: dict[str, Any]) -> str:
    r, c = ModelRecord.of(model), model.config
    lines = [f"# {name}", "", str(r.description or "A U-Net exported by napari-unet."), "",
             "U-Net (Ronneberger et al. 2015) with unpadded convolutions, exported by napari-unet "
             f"{__version__}: depth {c.depth}, {c.base_channels} base channels, "
             f"{parameter_count(c.in_channels, c.n_classes, c.depth, c.base_channels):,} "
             f"parameters; classes {', '.join(c.class_names)}; halo {output_halo(model)} px.", "",
             "## Use", "", "Input: one image (batch, channel, y, x), any intensity range; "
             "`scale_range` maps the model's percentiles to 0 and 1. Output: per-class softmax "
             f"probabilities with the input's size; the outer {output_halo(model)} px rely on mirrored "
             "context (declared as the output halo, cropped in blockwise prediction).",
             "In napari-unet, `napari-unet predict --model THIS.zip` or the Segment dock's "
             "\"load model…\" reads the package back as a model that can be fine-tuned again, "
             "with the post-processing in `config.napari_unet.postprocess`.", "",
             "## Training", "", f"Data: {_given(r.data, 'not recorded')}.",
             f"Parent: {r.parent or 'none (trained from scratch)'}.",
             f"Steps: {_given(r.steps, 'not recorded')}; final loss: {_given(r.final_loss, '-')}.",
             f"Licence note: {r.licence or r.parent_licence or 'none recorded'}.",
             "The full record, with the fine-tuning lineage (`history`), is in "
             "`config.napari_unet.record`.", "",
             "## Validation", "",
             f"The test input ({'x'.join(map(str, info['test_shape']))}) and its output "
             "were computed by napari-unet with the packaged network, the declared "
             "preprocessing and softmax; `bioimageio test` recomputes them with both weight "
             "formats and runs inputs of other sizes.", ""]
    metrics = r.metrics or {}
    if metrics:
        lines += ["Self-check of the last fine-tuning round, on held-back parts of the corrected "
                  "slices:", ""] + [f"- {k}: {v}" for k, v in metrics.items()] + [""]
    lines += ["Check it yourself: `bioimageio test THIS.zip`.", ""]
    return "\n".join(lines)


def _given(value: Any, default: str) -> Any:
    """``value``, or ``default`` when it is not recorded (None)."""
    return default if value is None else value


def _rdf(model: UNet, name: str, description: str, authors: list[str], license: str,
         tags: list[str], info: dict[str, Any]) -> dict[str, Any]:
    c = model.config
    lo, step = input_geometry(model)
    channels = [f"channel{i}" for i in range(c.in_channels)]
    classes = [_identifier(n, f"class{i}") for i, n in enumerate(c.class_names)]
    if len(set(classes)) != len(classes):
        classes = [f"class{i}" for i in range(len(classes))]
    space_in = [{"type": "space", "id": a, "size": {"min": lo, "step": step}} for a in "yx"]
    space_out = [{"type": "space", "id": a, "halo": output_halo(model),
                  "size": {"tensor_id": "input", "axis_id": a}} for a in "yx"]
    from ..inference.postprocess import postprocess_settings

    record = _plain(ModelRecord.of(model).to_dict(keep_source=False))  # no local path
    ours = {"format": FORMAT, "package_version": __version__, "unet_config": _plain(c.to_dict()),
            "postprocess": _plain(postprocess_settings(model)), "record": record}
    torch_version = torch.__version__.split("+")[0]
    return {
        "format_version": "0.5.4", "type": "model", "name": name, "description": description,
        "authors": [{"name": a} for a in authors], "cite": CITE, "license": license,
        "tags": tags, "documentation": "README.md", "covers": ["cover.png"],
        "version": "0.1.0",
        "inputs": [{"id": "input", "description": "raw image",
                    "axes": [{"type": "batch"}, {"type": "channel", "channel_names": channels},
                             *space_in],
                    "test_tensor": {"source": "test_input.npy"},
                    "sample_tensor": {"source": "sample_input.tif"},
                    "data": {"type": "float32"},
                    "preprocessing": preprocessing(Normalization.from_dict(c.normalization))}],
        "outputs": [{"id": "probabilities", "description": "per-class softmax",
                     "axes": [{"type": "batch"}, {"type": "channel", "channel_names": classes},
                              *space_out],
                     "test_tensor": {"source": "test_output.npy"},
                     "sample_tensor": {"source": "sample_output.tif"},
                     "data": {"type": "float32", "range": [0.0, 1.0]},
                     "postprocessing": [{"id": "softmax", "kwargs": {"axis": "channel"}}]}],
        "weights": {
            "pytorch_state_dict": {
                "source": "weights.pt", "pytorch_version": torch_version,
                "architecture": {"source": ARCH_FILE, "callable": "BioimageioUNet",
                                 "kwargs": arch_kwargs(model)}},
            "torchscript": {"source": "weights.torchscript.pt", "pytorch_version": torch_version,
                            "parent": "pytorch_state_dict"}},
        "config": {CONFIG_KEY: ours, "bioimageio": {
            "architecture_type": "2D U-Net", "task": "segmentation",
            "model_parameter_count": parameter_count(c.in_channels, c.n_classes, c.depth,
                                                     c.base_channels)}},
    }


def export_bioimageio(
    model: UNet | str | os.PathLike, path: str | os.PathLike, *, name: str | None = None,
    description: str | None = None, authors: list[str] | None = None,
    license: str = "BSD-3-Clause", tags: list[str] | None = None,
    sample: np.ndarray | None = None, overwrite: bool = False,
) -> Path:
    """Write ``model`` as a bioimage.io model package (a ``.zip``), validated on the way.

    Parameters
    ----------
    model : UNet, str or path-like
        The model, or a built-in name or model file for :func:`napari_unet.load_model`.
    path : str or path-like
        The package to write (``.zip``), atomically.
    name, description : str, optional
        Default: from the model's record.
    authors : list of str, optional
        Author names (default: ``["napari-unet user"]``).
    license : str
        SPDX licence identifier of the weights.
    tags : list of str, optional
        Extra tags.
    sample : numpy.ndarray, optional
        Image for the test tensors (default: a shipped nuclei image), ``(Y, X)`` or ``(C, Y, X)``.
    overwrite : bool
        Replace an existing file.

    Returns
    -------
    pathlib.Path
        The written package.

    Raises
    ------
    ValueError
        One line: the extra is missing, the path is refused, or bioimage.io finds the
        description invalid (nothing is written then).
    """
    require_bioimageio()
    model = _exportable(model)
    path = Path(path)
    if path.suffix.lower() != ".zip":
        raise ValueError(f"a bioimage.io package is a .zip file, got {path}")
    path = check_output(path, overwrite=overwrite)
    r = ModelRecord.of(model)
    name = package_name(name or r.name or "napari-unet model")
    description = description or str(r.description or "U-Net segmentation (napari-unet)")
    tags = ["unet", "segmentation", "2d", "pytorch", "napari-unet", *(tags or [])]
    with tempfile.TemporaryDirectory(prefix="napari-unet-bioimageio-") as tmp:
        folder = Path(tmp)
        info = _write_files(model, folder, sample)
        (folder / "README.md").write_text(_readme(model, name, info), encoding="utf-8")
        rdf = _rdf(model, name, description[:1024], authors or ["napari-unet user"], license,
                   tags, info)
        with atomic_output(path, directory=False) as out:
            _save_package(rdf, folder, out)
    return path


def _exportable(model: UNet | str | os.PathLike) -> UNet:
    """``model`` as a :class:`UNet` (loaded if a name or file); bioimage.io runtimes refused."""
    if getattr(model, "is_bioimageio_runtime", False):
        raise ValueError(f"{ModelRecord.of(model).name} is a bioimage.io model not written by "
                         "napari-unet: share its own package instead")
    if not isinstance(model, UNet):
        from ..model_files import load_model

        model = load_model(model)
    return model


def first_error(descr: Any) -> str:
    """``N errors; LOCATION: MESSAGE`` of an invalid bioimage.io description, on one line."""
    errors = descr.validation_summary.errors
    if not errors:
        return "invalid"
    msg = " ".join(str(errors[0].msg).split())
    return f"{len(errors)} errors; {'.'.join(map(str, errors[0].loc))}: {msg}"


def _save_package(rdf: dict[str, Any], folder: Path, out: Path) -> None:
    from bioimageio.spec import (
        InvalidDescr,
        ValidationContext,
        build_description,
        save_bioimageio_package,
    )

    with ValidationContext(root=folder, perform_io_checks=True):
        descr = build_description(rdf)
    if isinstance(descr, InvalidDescr):
        raise ValueError(f"bioimage.io refused the description ({first_error(descr)})")
    staged = out.with_suffix(".zip")  # the packager wants a .zip name
    try:
        save_bioimageio_package(descr, output_path=staged)
        os.replace(staged, out)
    finally:
        staged.unlink(missing_ok=True)
