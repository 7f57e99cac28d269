"""Model files and training checkpoints.

A model file is a plain dict saved with :func:`torch.save` and read back with
``torch.load(weights_only=True)``, so a hostile file cannot execute code. It holds the
weights, the architecture config (with normalisation and class names) and a training
record. Saving is atomic: a temporary file in the same folder, then :func:`os.replace`.
"""

from __future__ import annotations

import datetime as _dt
import os
import tempfile
from importlib import resources
from pathlib import Path
from typing import Any

import torch

from . import __version__
from .model import UNet, UNetConfig

FORMAT = "napari-unet/model-v1"
CHECKPOINT_FORMAT = "napari-unet/checkpoint-v1"


def _atomic_save(obj: dict[str, Any], path: str | os.PathLike) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; a model file is an ordinary file
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
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
    record = _plain({k: v for k, v in model.record.items() if k != "source"})  # no local path
    record.setdefault("package_version", __version__)
    record.setdefault("date", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    return {"format": FORMAT, "config": model.config.to_dict(), "state_dict": state,
            "record": record}


def model_from_dict(d: dict[str, Any]) -> UNet:
    """Rebuild a model from :func:`model_to_dict` output."""
    if d.get("format") != FORMAT:
        raise ValueError(f"not a napari-unet model (format {d.get('format')!r})")
    model = UNet(UNetConfig.from_dict(d["config"]))
    state = {k: v.float() if v.is_floating_point() else v for k, v in d["state_dict"].items()}
    model.load_state_dict(state)
    model.record = dict(d.get("record", {}))
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


def _read(path: str | os.PathLike, map_location: str | torch.device) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"model file not found: {p}")
    try:
        return torch.load(p, map_location=map_location, weights_only=True)
    except Exception as err:
        raise ValueError(f"cannot read {p} as a napari-unet file: {err}") from err


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
    """Load a built-in model by name or a model file (safe: ``weights_only=True``)."""
    path = resolve_model_path(name_or_path)
    d = _read(path, map_location)
    if d.get("format") == CHECKPOINT_FORMAT:
        d = d["model"]
    model = model_from_dict(d)
    model.record.setdefault("source", str(path))
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
    return {**d, "model": model_from_dict(d["model"])}
