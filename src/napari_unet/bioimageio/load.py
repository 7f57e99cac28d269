"""Read bioimage.io model packages (``.zip`` with an ``rdf.yaml``).

A package written by :mod:`napari_unet.bioimageio.export` comes back as a
:class:`~napari_unet.model.UNet`, with its config, post-processing settings and training
record, ready to be fine-tuned again; reading it needs neither bioimageio.core nor
network access. Any other 2D model package with ``pytorch_state_dict`` or ``torchscript``
weights is run for prediction only, through bioimage.io's own runtime with its declared
pre- and post-processing (:class:`napari_unet.bioimageio.runtime.BioimageioModel`, which
needs the ``[bioimageio]`` extra).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import zipfile
from pathlib import Path
from typing import Any

import torch

from ..model import UNetConfig, parameter_count
from ..model_record import ModelRecord, update_record
from .export import CONFIG_KEY, FORMAT

RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
MAX_RDF_BYTES = 4 * 2**20


def _rdf_member(z: zipfile.ZipFile) -> str | None:
    names = set(z.namelist())
    return next((n for n in RDF_NAMES if n in names), None)


def is_package(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip holding a bioimage.io description at its top."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            return _rdf_member(z) is not None
    except (OSError, zipfile.BadZipFile):
        return False


def read_rdf(path: str | os.PathLike) -> dict[str, Any]:
    """The package's description (``rdf.yaml``) as a dict.

    Raises
    ------
    ValueError
        One line naming the file: not a package, an oversized or unreadable description.
    """
    import yaml

    p = Path(path)
    try:
        with zipfile.ZipFile(p) as z:
            name = _rdf_member(z)
            if name is None:
                raise ValueError("no rdf.yaml inside")
            if z.getinfo(name).file_size > MAX_RDF_BYTES:
                raise ValueError(f"{name} is larger than {MAX_RDF_BYTES // 2**20} MiB")
            rdf = yaml.safe_load(z.read(name))
    except (OSError, zipfile.BadZipFile, yaml.YAMLError, ValueError) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read {p} as a bioimage.io package: {first}") from None
    if not isinstance(rdf, dict):
        raise ValueError(f"cannot read {p} as a bioimage.io package: rdf.yaml is not a mapping")
    return rdf


def is_napari_unet_export(rdf: dict[str, Any]) -> bool:
    """Whether the description was written by napari-unet's exporter."""
    ours = (rdf.get("config") or {}).get(CONFIG_KEY)
    return isinstance(ours, dict) and ours.get("format") == FORMAT


def _source(entry: Any) -> str:
    src = entry.get("source") if isinstance(entry, dict) else None
    if not isinstance(src, str) or Path(src).name != src:
        raise ValueError(f"weights source {src!r} is not a file at the package's top")
    return src


def _read_state(p: Path, rdf: dict[str, Any], config: UNetConfig,
                map_location: str | torch.device) -> dict[str, Any]:
    entry = (rdf.get("weights") or {}).get("pytorch_state_dict")
    name = _source(entry)
    limit = parameter_count(config.in_channels, config.n_classes, config.depth,
                            config.base_channels) * 8 + 2**20
    with zipfile.ZipFile(p) as z:
        try:
            info = z.getinfo(name)
        except KeyError:
            raise ValueError(f"the weights file {name} is missing") from None
        if info.file_size > limit:
            raise ValueError(f"{name} holds {info.file_size:,} bytes, more than the config's "
                             f"network needs ({limit:,})")
        data = z.read(info)
    sha = entry.get("sha256")
    if sha and hashlib.sha256(data).hexdigest() != sha:
        raise ValueError(f"{name} does not match its sha256 in rdf.yaml (a damaged package)")
    with tempfile.TemporaryDirectory(prefix="napari-unet-") as tmp:
        f = Path(tmp) / "weights.pt"
        f.write_bytes(data)
        state = torch.load(f, map_location=map_location, weights_only=True)
    if not isinstance(state, dict):
        raise ValueError(f"{name} holds a {type(state).__name__}, not a state dict")
    return state


def load_package(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Any:
    """Load a bioimage.io model package.

    Parameters
    ----------
    path : str or path-like
        The ``.zip`` package.
    map_location : str or torch.device
        Where the weights of a napari-unet export go.

    Returns
    -------
    UNet or BioimageioModel
        A :class:`~napari_unet.model.UNet` for napari-unet's own exports (it can be
        fine-tuned); else a prediction-only :class:`~napari_unet.bioimageio.runtime.BioimageioModel`.

    Raises
    ------
    ValueError
        One line naming the file: unreadable, damaged, or a model napari-unet cannot run.
    """
    p = Path(path)
    rdf = read_rdf(p)
    if rdf.get("type") != "model":
        raise ValueError(f"{p} is a bioimage.io {rdf.get('type', 'resource')!r}, not a model")
    if not is_napari_unet_export(rdf):
        from .runtime import BioimageioModel

        return BioimageioModel(p, rdf)
    from ..model_files import FORMAT as MODEL_FORMAT
    from ..model_files import model_from_dict

    ours = rdf["config"][CONFIG_KEY]
    try:
        config = UNetConfig.from_dict(ours.get("unet_config"))
        state = _read_state(p, rdf, config, map_location)
        record = ours.get("record") or {}
        model = model_from_dict({"format": MODEL_FORMAT, "config": config.to_dict(),
                                 "state_dict": state, "record": record})
    except (ValueError, TypeError, RuntimeError, OSError, zipfile.BadZipFile) as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ValueError(f"cannot read {p} as a napari-unet export: {first}") from None
    pp = ours.get("postprocess")
    if isinstance(pp, dict):
        update_record(model, postprocess={**(ModelRecord.of(model).postprocess or {}), **pp})
    update_record(model, only_missing=True, name=rdf.get("name"))
    update_record(model, source=str(p))
    return model


__all__ = ["is_package", "is_napari_unet_export", "load_package", "read_rdf"]
