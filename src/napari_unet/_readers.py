"""npe2 readers: autosave files open as Labels with their marks; model files join the list.

* ``*.autosave.npz`` (:mod:`napari_unet.autosave`) opens as a Labels layer named as the
  saved layer, with the corrected-slice marks in ``metadata[CORRECTED_KEY]``: where every
  napari-unet dock reads them, as after *Resume*.
* A model file (``.pt``) or a bioimage.io package (a ``.zip`` holding ``rdf.yaml`` or
  ``bioimageio.yaml``) is loaded, then offered to the model list through
  :func:`offer_model`; the reader returns napari's null layer list ``[(None,)]``. Other
  zips are left to other readers.

This module imports neither napari nor Qt: the GUI session subscribes with
:func:`watch_models` (the Segment dock shows the session's list).
"""

from __future__ import annotations

import os
import weakref
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from .autosave import CORRECTED_KEY, SUFFIX

#: The names a bioimage.io description has at the top of a package (as
#: :data:`napari_unet.bioimageio.load.RDF_NAMES`, without importing torch to check).
RDF_NAMES = ("rdf.yaml", "bioimageio.yaml")
MODEL_SUFFIXES = (".pt",)

LayerData = tuple[Any, ...]
ReaderFunction = Callable[[Any], list[LayerData]]
ModelCallback = Callable[[Path, Any], None]

_pending: list[tuple[Path, Any]] = []
_watchers: list[weakref.ref] = []


def _one_path(path: str | os.PathLike | Sequence[str | os.PathLike]) -> list[Path]:
    if isinstance(path, (str, os.PathLike)):
        return [Path(path)]
    return [Path(p) for p in path]


# --- autosave files ------------------------------------------------------------------
def is_autosave_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is an autosave ``.npz`` (a zip holding ``corrected`` and the labels)."""
    p = Path(path)
    if not p.name.endswith(SUFFIX) or not p.is_file():
        return False
    try:
        with zipfile.ZipFile(p) as z:
            names = set(z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False
    # 2D labels are in the file; a stack's slices may lie in slice files beside it
    return "corrected.npy" in names and bool({"labels.npy", "meta.npy"} & names)


def read_autosave_layer(path: str | os.PathLike) -> LayerData:
    """One autosave file as a napari ``(data, kwargs, "labels")`` tuple.

    Raises
    ------
    ValueError
        With a one-line reason when the file is not a usable autosave file.
    """
    from .autosave import read_autosave

    p = Path(path)
    data, marks, meta = read_autosave(p)  # one-line ValueError for a file that is not ours
    name = (meta.get("layer") if isinstance(meta, dict) else None) or p.name.removesuffix(SUFFIX)
    return data, {"name": name, "metadata": {CORRECTED_KEY: sorted(set(marks))}}, "labels"


def get_autosave_reader(path: str | os.PathLike | Sequence[str | os.PathLike],
                        ) -> ReaderFunction | None:
    """npe2 reader hook for ``*.autosave.npz``: a reader function, or None if not ours."""
    paths = _one_path(path)
    if not paths or not all(is_autosave_file(p) for p in paths):
        return None
    return lambda given: [read_autosave_layer(p) for p in _one_path(given)]


# --- model files ---------------------------------------------------------------------
def is_bioimageio_zip(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a zip with a bioimage.io description at its top."""
    p = Path(path)
    if not p.is_file() or not zipfile.is_zipfile(p):
        return False
    try:
        with zipfile.ZipFile(p) as z:
            return any(name in RDF_NAMES for name in z.namelist())
    except (OSError, zipfile.BadZipFile):
        return False


def is_model_file(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a file this reader offers as a model (``.pt`` or a package)."""
    p = Path(path)
    if p.suffix.lower() in MODEL_SUFFIXES:
        return p.is_file()
    return p.suffix.lower() == ".zip" and is_bioimageio_zip(p)


def watch_models(callback: ModelCallback) -> None:
    """Call ``callback(path, model)`` for every model file read, including earlier ones.

    ``callback`` is held weakly (a bound method dies with its object). Models read while
    nobody watched are handed to the first watcher.
    """
    ref: weakref.ref = (weakref.WeakMethod(callback) if hasattr(callback, "__self__")
                        else weakref.ref(callback))
    _watchers.append(ref)
    while _pending:
        callback(*_pending.pop(0))


def offer_model(path: str | os.PathLike, model: Any) -> bool:
    """Hand a loaded model to the watchers; keep it for later when there are none.

    Returns
    -------
    bool
        Whether a watcher took it now.
    """
    alive = [cb for cb in (ref() for ref in _watchers) if cb is not None]
    _watchers[:] = [ref for ref in _watchers if ref() is not None]
    if not alive:
        _pending.append((Path(path), model))
        return False
    for cb in alive:
        cb(Path(path), model)
    return True


def read_model_file(path: str | os.PathLike) -> list[LayerData]:
    """Load a model file and offer it to the model list; napari's null layer list.

    Raises
    ------
    ValueError
        With a one-line reason when the file cannot be loaded as a model.
    """
    from .model_files import load_model

    p = Path(path)
    try:
        model = load_model(p)
    except Exception as err:  # any failure of a foreign file: one line, nothing registered
        msg = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise ValueError(f"cannot load {p.name} as a model: {msg}") from None
    offer_model(p, model)
    return [(None,)]


def get_model_reader(path: str | os.PathLike | Sequence[str | os.PathLike],
                     ) -> ReaderFunction | None:
    """npe2 reader hook for ``*.pt`` and bioimage.io ``*.zip``: a reader function, or None."""
    paths = _one_path(path)
    if len(paths) != 1 or not is_model_file(paths[0]):
        return None
    return lambda given: read_model_file(_one_path(given)[0])
