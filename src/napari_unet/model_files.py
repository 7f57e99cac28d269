"""Model files and training checkpoints.

A model file is a plain dict saved with :func:`torch.save` and read back with
``torch.load(weights_only=True)``, so a hostile file cannot execute code. It holds the
weights, the architecture config (with normalisation and class names) and a training
record. Saving is atomic: a temporary file in the same folder, then :func:`os.replace`
(see :mod:`napari_unet.outputs`). Loading first checks the file without reading its
tensors (:mod:`napari_unet._modelscan`): the config must be within
:data:`napari_unet.model.LIMITS`, and the declared tensor data no larger than such a
network needs; then keys and shapes must match the config. Every failure is one line
naming the file.
"""

from __future__ import annotations

import datetime as _dt
import os
import pickle
import zipfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from . import __version__, _modelscan
from .model import UNet, UNetConfig, parameter_count
from .model_record import ModelRecord, update_record
from .outputs import atomic_output, check_output

FORMAT = "napari-unet/model-v1"
CHECKPOINT_FORMAT = "napari-unet/checkpoint-v1"


def _atomic_save(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    check_output(path, overwrite=True, probe=False)  # no directories, devices or FIFOs
    with atomic_output(path, directory=False) as tmp:
        with open(tmp, "xb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
    return path


def _plain(x: Any) -> Any:
    """Numpy scalars and tuples to plain Python types, which ``weights_only`` loading accepts."""
    if isinstance(x, dict):
        return {str(k): _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "item") and not isinstance(x, torch.Tensor):
        return x.item()
    return x


def model_to_dict(model: UNet, *, half: bool = False) -> dict[str, Any]:
    """Serialisable dict of a model: weights, config and training record."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if half:
        state = {k: v.half() if v.is_floating_point() else v for k, v in state.items()}
    record = _plain(ModelRecord.of(model).to_dict(keep_source=False))  # no local path
    record.setdefault("package_version", __version__)
    record.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return {"format": FORMAT, "config": model.config.to_dict(), "state_dict": state,
            "record": record}


def _expected_shapes(config: UNetConfig) -> dict[str, tuple[int, ...]]:
    """Shapes of a network's state dict, from a copy built on the meta device (no memory)."""
    with torch.device("meta"):
        net = UNet(config)
    return {k: tuple(v.shape) for k, v in net.state_dict().items()}


def _check_state(state: Any, config: UNetConfig) -> None:
    if not isinstance(state, dict):
        raise ValueError(f"state_dict must be a dict, got {type(state).__name__}")
    expected = _expected_shapes(config)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected), key=str)
    if missing or extra:
        parts = ([f"missing {len(missing)} weights (e.g. {missing[0]})"] if missing else []) + (
            [f"{len(extra)} unexpected (e.g. {extra[0]!s})"] if extra else [])
        raise ValueError(f"weights do not match the config: {'; '.join(parts)}")
    for k, shape in expected.items():
        v = state[k]
        if not isinstance(v, torch.Tensor):
            raise ValueError(f"weight {k} is a {type(v).__name__}, not a tensor")
        if tuple(v.shape) != shape:
            raise ValueError(f"weight {k} has shape {tuple(v.shape)}, the config needs {shape}")
        if not (v.is_floating_point() and torch.isfinite(v).all()):
            raise ValueError(f"weight {k} is not finite floating point")


def model_from_dict(d: dict[str, Any]) -> UNet:
    """Rebuild a model from :func:`model_to_dict` output.

    Raises
    ------
    ValueError
        With one line saying what is wrong: not a dict, wrong format, a config out of
        bounds, missing or unexpected weights, wrong shapes, a record that is not a dict
        or holds a value of the wrong type (:class:`napari_unet.model_record.ModelRecord`).
    """
    if not isinstance(d, dict):
        raise ValueError(f"a model is a dict, got {type(d).__name__}")
    if d.get("format") != FORMAT:
        raise ValueError(f"not a napari-unet model (format {d.get('format')!r})")
    config = UNetConfig.from_dict(d.get("config"))
    state = d.get("state_dict")
    _check_state(state, config)
    record = d.get("record", {})
    ModelRecord.from_dict(record)  # a dict, each known key of its type
    model = UNet(config)
    model.load_state_dict({k: v.float() for k, v in state.items()})
    model.record = dict(record)
    return model


def save_model(model: UNet, path: str | os.PathLike, *, half: bool = False) -> Path:
    """Save ``model`` to ``path`` atomically.

    Parameters
    ----------
    model : UNet
        The model; its ``record`` dict (training history) is stored too.
    path : str or path-like
        Destination (``.pt``).
    half : bool
        Store weights as float16 (half the size; loaded back as float32).

    Returns
    -------
    pathlib.Path
        The written path.
    """
    return _atomic_save(model_to_dict(model, half=half), path)


def save_model_or_rescue(model: UNet, path: str | os.PathLike, *, half: bool = False,
                         ) -> tuple[Path, str | None]:
    """Save ``model`` to ``path``; if that fails, save it elsewhere rather than lose it.

    For the end of a long training: when ``path`` cannot be written (a full or read-only
    disk, a folder removed meanwhile), the model goes to ``NAME.rescued-PID.pt`` in the
    current folder, then in the temporary folder.

    Returns
    -------
    path : pathlib.Path
        Where the model was written.
    warning : str or None
        None when ``path`` itself was written; else one line saying why not and where the
        model is.

    Raises
    ------
    OSError
        When no location could be written; the message names them all.
    """
    import tempfile

    path = Path(path)
    try:
        return save_model(model, path, half=half), None
    except (OSError, ValueError) as err:
        first = f"{err.strerror or err}" if isinstance(err, OSError) else str(err)
    name = f"{path.stem}.rescued-{os.getpid()}.pt"
    tried = [str(path)]
    for folder in (Path.cwd(), Path(tempfile.gettempdir())):
        target = folder / name
        tried.append(str(target))
        try:
            save_model(model, target, half=half)
        except (OSError, ValueError):
            continue
        return target, f"could not write {path} ({first}); the model was saved to {target}"
    raise OSError(f"could not save the model anywhere (tried {', '.join(tried)}): {first}")


def _prescan(p: Path) -> None:
    """Refuse a file whose config is out of bounds or whose tensors exceed what it implies."""
    obj, declared, records = _modelscan.scan(p)
    inner = obj.get("model") if obj.get("format") == CHECKPOINT_FORMAT else obj
    if not isinstance(inner, dict):
        raise ValueError(f"a model is a dict, got {type(inner).__name__}")
    config = UNetConfig.from_dict(inner.get("config"))
    n = parameter_count(config.in_channels, config.n_classes, config.depth, config.base_channels)
    _modelscan.check_sizes(declared, records, n)


def _read(path: str | os.PathLike, map_location: str | torch.device) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    try:
        _prescan(p)
        d = torch.load(p, map_location=map_location, weights_only=True)
    except (ValueError, TypeError, RuntimeError, EOFError, OSError, pickle.UnpicklingError,
            zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read {p} as a napari-unet file: {_line(err)}") from None
    if not isinstance(d, dict):
        raise ValueError(f"cannot read {p} as a napari-unet file: it holds a "
                         f"{type(d).__name__}, not a dict")
    return d


def _line(err: BaseException) -> str:
    """The first line of an exception's message (torch's can run over many)."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def builtin_dir() -> Path:
    """Folder holding the built-in models shipped with the package."""
    return Path(str(resources.files("napari_unet") / "models"))


def list_builtin_models() -> list[str]:
    """Names of the built-in models (``napari-unet models`` lists them)."""
    d = builtin_dir()
    return sorted(p.stem for p in d.glob("*.pt")) if d.is_dir() else []


def resolve_model_path(name_or_path: str | os.PathLike) -> Path:
    """Path of a built-in model name or a model file."""
    s = str(name_or_path)
    if s in list_builtin_models():
        return builtin_dir() / f"{s}.pt"
    p = Path(s).expanduser()
    if not p.is_file():
        names = ", ".join(list_builtin_models()) or "none installed"
        raise FileNotFoundError(f"no model file or built-in model named {s!r} (built-in: {names})")
    return p


def load_model(name_or_path: str | os.PathLike, map_location: str | torch.device = "cpu") -> UNet:
    """Load a built-in model by name, a model file or a bioimage.io package (``.zip``).

    Model files are read safely (``weights_only=True``). A bioimage.io package written by
    napari-unet comes back as a :class:`UNet`; any other 2D bioimage.io model comes back
    as a prediction-only :class:`napari_unet.bioimageio.runtime.BioimageioModel`
    (:mod:`napari_unet.bioimageio.load`).
    """
    path = resolve_model_path(name_or_path)
    if path.suffix.lower() == ".zip":
        from .bioimageio.load import is_package, load_package

        if is_package(path):
            return load_package(path, map_location)
    d = _read(path, map_location)
    try:
        model = model_from_dict(d["model"] if d.get("format") == CHECKPOINT_FORMAT else d)
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
    update_record(model, only_missing=True, source=str(path))
    return model


def save_checkpoint(
    path: str | os.PathLike, model: UNet, optimizer: torch.optim.Optimizer,
    config: dict[str, Any], step: int,
) -> Path:
    """Save a resumable training checkpoint: model, optimiser state, config and step."""
    return _atomic_save({"format": CHECKPOINT_FORMAT, "model": model_to_dict(model),
                         "optimizer": optimizer.state_dict(), "config": _plain(config),
                         "step": int(step)}, path)


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Load a checkpoint: ``{"model": UNet, "optimizer": state_dict, "config": dict, "step": int}``."""
    d = _read(path, map_location)
    if d.get("format") != CHECKPOINT_FORMAT:
        raise ValueError(f"{path} is not a napari-unet checkpoint")
    try:
        return {**d, "model": model_from_dict(d.get("model"))}
    except ValueError as err:
        raise ValueError(f"{path}: {err}") from None
