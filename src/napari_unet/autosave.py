"""Autosave of corrected labels and the marked slices, and resuming from the file.

The file ``<name>.autosave.npz`` holds ``corrected`` (the marked slice indices) and
``meta`` (JSON text: layer name, image path, shape, time). It lies beside the image
(``<image>.<layer>.autosave.npz``) when the image came from a file, else in a folder
(default ``~/.napari-unet/autosave``, or ``$NAPARI_UNET_AUTOSAVE_DIR``).

A 2D layer's labels are in the file itself (``labels``). A stack is saved **per slice**:
each slice is a small compressed ``.npz`` in the folder ``<name>.autosave.slices`` beside
the file, and the file lists which slice file holds each slice. A save writes only the
slices that changed (``dirty``) under new names, then the list; the slice files no list
refers to any more are removed afterwards. Every file goes through the one atomic writer
(:func:`~napari_unet.outputs.atomic_output`: a temporary file, fsync, ``os.replace``),
and the list is written last, so a crash at any moment leaves the previous save whole.

Rotating backups keep earlier corrected versions: each time a slice is marked corrected,
and just before Segment overwrites a corrected slice, the written file is also kept as
``<name>.backup1.autosave.npz`` (the older backups move to ``backup2`` ... ``backup5``); a
backup's slice files are kept as long as a backup lists them.
:class:`~napari_unet._qt.autosaver.Autosaver` does the saving.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import secrets
import shutil
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from .outputs import TEMP_TAG, atomic_output, clean_stale

SUFFIX = ".autosave.npz"
#: Folder of a stack's slice files, beside the file (``<name>.autosave.slices``).
SLICES_SUFFIX = ".autosave.slices"
DEBOUNCE_MS = 1000
#: Key of the corrected-slice list in a Labels layer's ``metadata`` (and in the TIFF and
#: zarr metadata the plugin's writers add): every dock reads the marks from there.
CORRECTED_KEY = "napari_unet_corrected"


def default_autosave_dir() -> Path:
    """``$NAPARI_UNET_AUTOSAVE_DIR`` or ``~/.napari-unet/autosave``."""
    env = os.environ.get("NAPARI_UNET_AUTOSAVE_DIR")
    return Path(env).expanduser() if env else Path.home() / ".napari-unet" / "autosave"


def _safe(name: str) -> str:
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "labels"


def source_path(layer: Any) -> Path | None:
    """Return the file a layer was read from, if any."""
    src = getattr(getattr(layer, "source", None), "path", None)
    return Path(src) if src else None


def autosave_path(labels: Any, image: Any | None = None, folder: str | Path | None = None,
                  ) -> Path:
    """Where the autosave of ``labels`` goes.

    Parameters
    ----------
    labels : napari.layers.Labels
        The corrected labels.
    image : napari.layers.Image, optional
        Its image; when it came from a file the autosave lies beside it.
    folder : path, optional
        A chosen folder; it wins over the image's folder.

    Returns
    -------
    pathlib.Path
        The ``.autosave.npz`` path. Labels opened from an autosave file (dropped on the
        viewer) keep saving to that file unless their image came from a file or a folder
        was chosen.
    """
    src = source_path(image) if image is not None else None
    if src is None and folder is None:
        own = source_path(labels)
        if own is not None and own.name.endswith(SUFFIX):  # opened from its autosave file
            return own
    src = src or source_path(labels)
    if folder is None and src is not None and not src.is_dir():
        stem = src.name.removesuffix(src.suffix)  # keep dots: a.1.tif and a.2.tif differ
        return src.with_name(f"{stem}.{_safe(labels.name)}{SUFFIX}")
    return Path(folder or default_autosave_dir()) / f"{_safe(labels.name)}{SUFFIX}"


#: Newest snapshot number committed per file: an older snapshot never replaces a newer one.
_COMMITTED: dict[str, int] = {}
_COMMIT_LOCK = threading.Lock()


#: Rotating backups kept beside an autosave file.
KEEP_BACKUPS = 5


def backup_path(path: str | Path, n: int) -> Path:
    """The ``n``-th backup of an autosave file (1 is the newest)."""
    path = Path(path)
    stem = path.name.removesuffix(SUFFIX)
    return path.with_name(f"{stem}.backup{int(n)}{SUFFIX}")


def rotate_backups(path: str | Path, keep: int = KEEP_BACKUPS) -> Path | None:
    """Keep the current autosave file as backup 1, moving older backups down by one.

    Returns
    -------
    pathlib.Path or None
        The new backup (None when there is no file to keep).
    """
    path = Path(path)
    if keep < 1 or not path.is_file():
        return None
    for n in range(keep - 1, 0, -1):
        if backup_path(path, n).is_file():
            os.replace(backup_path(path, n), backup_path(path, n + 1))
    first = backup_path(path, 1)
    tmp = first.with_name(f".{first.name}.tmp")
    tmp.unlink(missing_ok=True)
    try:
        os.link(path, tmp)  # instant; a later os.replace of ``path`` leaves the backup alone
    except OSError:
        shutil.copyfile(path, tmp)
    os.replace(tmp, first)
    return first


def slices_dir(path: str | Path) -> Path:
    """The folder holding the slice files of the autosave ``path`` (and of its backups)."""
    path = Path(path)
    return path.with_name(path.name.removesuffix(SUFFIX) + SLICES_SUFFIX)


#: Slice files a write in progress (in this process) refers to: never collected.
_IN_FLIGHT: dict[int, set[str]] = {}


def _slice_file(z: int) -> str:
    return f"z{int(z):05d}-{secrets.token_hex(6)}.npz"


def _listed(path: Path) -> dict[int, str]:
    """The slice files an autosave file lists (empty when it is missing, 2D or unreadable)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"])) if "meta" in f else {}
    except (OSError, ValueError, KeyError):
        return {}
    return {int(z): str(name) for z, name in meta.get("slice_files", {}).items()}


def _collect(path: Path) -> None:
    """Remove the slice files that neither the file nor a backup lists (nor a write uses)."""
    folder = slices_dir(path)
    if not folder.is_dir():
        return
    keep = set(_listed(path).values())
    for n in range(1, KEEP_BACKUPS + 2):
        keep |= set(_listed(backup_path(path, n)).values())
    for names in _IN_FLIGHT.values():
        keep |= names
    for entry in folder.iterdir():
        name = entry.name
        if name.startswith(".") and TEMP_TAG in name:  # a killed write's temporary
            clean_stale(folder / name[1:name.index(TEMP_TAG)])
        elif name.startswith("z") and name.endswith(".npz") and name not in keep:
            entry.unlink(missing_ok=True)


def _save_npz(target: Path, **arrays: np.ndarray) -> None:
    with atomic_output(target, directory=False) as tmp:  # the one atomic writer
        _write_npz(tmp, arrays)


def _write_npz(tmp: Path, arrays: dict[str, np.ndarray]) -> None:
    """Write ``arrays`` as a compressed ``.npz`` to ``tmp`` and fsync it."""
    with open(tmp, "wb") as fh:
        np.savez_compressed(fh, **arrays)
        fh.flush()
        os.fsync(fh.fileno())


def write_autosave(path: str | Path, labels: np.ndarray, corrected: list[int],
                   meta: dict[str, Any] | None = None, seq: int | None = None,
                   backup: bool = False, dirty: Iterable[int] | None = None) -> Path:
    """Write labels and marks atomically; a stack only in the slices that changed.

    ``seq`` numbers snapshots: a write whose ``seq`` is older than one already committed to
    the same file is dropped (a background write finishing after a synchronous flush).
    With ``backup`` the written file is also kept as backup 1 (:func:`rotate_backups`).

    Parameters
    ----------
    dirty : iterable of int, optional
        Slices of a stack that changed since the last write to ``path``; the others keep
        their slice files. None: every slice is written (also when the last save does
        not match the shape and dtype of ``labels``).

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    labels = np.asarray(labels)
    info = {"saved": dt.datetime.now().isoformat(timespec="seconds"), **(meta or {})}
    key, locked, token = str(path.resolve()), False, secrets.randbits(48)
    arrays: dict[str, np.ndarray] = {"corrected": np.asarray(sorted(corrected), np.int64)}
    try:
        if labels.ndim >= 3:
            info.update(_write_slices(path, labels, dirty, token))
        else:
            arrays["labels"] = labels
        arrays["meta"] = np.asarray(json.dumps(info))
        with atomic_output(path, directory=False) as tmp:  # the list (or 2D file) last
            _write_npz(tmp, arrays)
            _COMMIT_LOCK.acquire()  # held until the rename is done (leaving the block)
            locked = True
            if seq is not None and _COMMITTED.get(key, -1) > seq:
                raise _Superseded
        if seq is not None:
            _COMMITTED[key] = seq
        if backup:
            rotate_backups(path)
        _IN_FLIGHT.pop(token, None)
        _collect(path)
    except _Superseded:
        pass
    finally:
        _IN_FLIGHT.pop(token, None)
        if locked:
            _COMMIT_LOCK.release()
    return path


def _write_slices(path: Path, labels: np.ndarray, dirty: Iterable[int] | None,
                  token: int) -> dict[str, Any]:
    """Write the changed slices of a stack to new slice files; return the list's metadata.

    Parameters
    ----------
    path : pathlib.Path
        The autosave file (the slice files go to :func:`slices_dir`).
    labels : numpy.ndarray
        The ``(Z, Y, X)`` labels.
    dirty : iterable of int, optional
        As for :func:`write_autosave`.
    token : int
        The write's key in ``_IN_FLIGHT``: the slice files it lists stay uncollected until
        the caller removes it.

    Returns
    -------
    dict
        ``format``, ``slices_dir``, ``dtype``, ``shape`` and ``slice_files`` (slice -> file)
        for the file's ``meta``.
    """
    with _COMMIT_LOCK:  # what the last save lists, protected from collection
        files = _listed(path)
        same = _same_layout(path, labels)
        todo = set(range(labels.shape[0])) if dirty is None or not same else (
            {int(z) for z in dirty} | (set(range(labels.shape[0])) - set(files)))
        files = {z: name for z, name in files.items()
                 if z < labels.shape[0] and z not in todo}
        files.update({z: _slice_file(z) for z in todo})
        _IN_FLIGHT[token] = set(files.values())
    folder = slices_dir(path)
    folder.mkdir(parents=True, exist_ok=True)
    for z in sorted(todo):
        _save_npz(folder / files[z], labels=labels[z])
    return dict(format=2, slices_dir=folder.name, dtype=labels.dtype.str,
                shape=list(labels.shape), slice_files={str(z): files[z] for z in files})


def _same_layout(path: Path, labels: np.ndarray) -> bool:
    """Whether the last save of ``path`` is a stack of the shape and dtype of ``labels``."""
    try:
        with np.load(path, allow_pickle=False) as f:
            meta = json.loads(str(f["meta"])) if "meta" in f else {}
    except (OSError, ValueError, KeyError):
        return False
    return (meta.get("format") == 2 and meta.get("shape") == list(labels.shape)
            and meta.get("dtype") == labels.dtype.str)


class _Superseded(Exception):
    """A newer snapshot of the same file was committed first: drop this one."""


def read_autosave(path: str | Path) -> tuple[np.ndarray, list[int], dict[str, Any]]:
    """Read an autosave file (or a backup): ``(labels, corrected slices, meta)``.

    Raises
    ------
    ValueError
        One line naming the file when it is not a usable autosave file (not an npz, a
        missing slice file, labels that are no integer image, marks outside the slices).
    """
    import zipfile

    path = Path(path)
    try:
        labels, corrected, meta = _read_autosave(path)
    except (OSError, ValueError, KeyError, TypeError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read {path.name} as a napari-unet autosave file: "
                         f"{type(err).__name__}: {err}".splitlines()[0]) from None
    if not isinstance(labels, np.ndarray):  # a member that is no .npy array
        raise ValueError(f"cannot read {path.name} as a napari-unet autosave file: it holds "
                         "no labels array")
    if labels.ndim < 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"{path.name}: the saved labels are not an integer image "
                         f"(shape {labels.shape}, dtype {labels.dtype})")
    n = labels.shape[0] if labels.ndim >= 3 else 1
    bad = [z for z in corrected if not 0 <= z < n]
    if bad:
        raise ValueError(f"{path.name}: corrected slice(s) {bad} lie outside the {n} "
                         "slice(s) of the labels")
    return labels, corrected, meta if isinstance(meta, dict) else {}


def _read_autosave(path: Path) -> tuple[Any, list[int], Any]:
    with np.load(path, allow_pickle=False) as f:
        corrected = [int(z) for z in f["corrected"]]
        meta = json.loads(str(f["meta"])) if "meta" in f else {}
        if "labels" in f:  # a 2D layer, or a file from before the per-slice format
            return f["labels"], corrected, meta
    folder = path.with_name(meta["slices_dir"])
    labels = np.zeros(meta["shape"], np.dtype(meta["dtype"]))
    for z, name in meta["slice_files"].items():
        with np.load(folder / name, allow_pickle=False) as f:
            labels[int(z)] = f["labels"]
    return labels, corrected, meta
