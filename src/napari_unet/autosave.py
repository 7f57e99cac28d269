"""Autosave of corrected labels and the marked slices, and resuming from the file.

The file is a ``.npz`` holding ``labels``, ``corrected`` (the marked slice indices) and
``meta`` (JSON text: layer name, image path, shape, time). It lies beside the image
(``<image>.autosave.npz``) when the image came from a file, else in a folder (default
``~/.napari-unet/autosave``, or ``$NAPARI_UNET_AUTOSAVE_DIR``). Every write goes to a
temporary file first and is moved into place with ``os.replace``, so a crash leaves
either the old or the new file, never a broken one.

Rotating backups keep earlier corrected versions: each time a slice is marked corrected,
and just before Segment overwrites a corrected slice, the written file is also kept as
``<name>.backup1.autosave.npz`` (the older backups move to ``backup2`` ... ``backup5``).
:class:`~napari_unet._qt.autosaver.Autosaver` does the saving.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .outputs import atomic_output

if TYPE_CHECKING:
    from napari.layers import Image, Labels

SUFFIX = ".autosave.npz"
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


def autosave_path(labels: Labels, image: Image | None = None, folder: str | Path | None = None,
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


def write_autosave(path: str | Path, labels: np.ndarray, corrected: list[int],
                   meta: dict[str, Any] | None = None, seq: int | None = None,
                   backup: bool = False) -> Path:
    """Write labels and marks atomically (temporary file, fsync, ``os.replace``).

    ``seq`` numbers snapshots: a write whose ``seq`` is older than one already committed to
    the same file is dropped (a background write finishing after a synchronous flush).
    With ``backup`` the written file is also kept as backup 1 (:func:`rotate_backups`).

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    info = {"saved": dt.datetime.now().isoformat(timespec="seconds"), **(meta or {})}
    key, locked = str(path.resolve()), False
    try:
        with atomic_output(path, directory=False) as tmp:  # the one atomic writer
            with open(tmp, "wb") as fh:
                np.savez_compressed(fh, labels=np.asarray(labels),
                                    corrected=np.asarray(sorted(corrected), np.int64),
                                    meta=np.asarray(json.dumps(info)))
                fh.flush()
                os.fsync(fh.fileno())
            _COMMIT_LOCK.acquire()  # held until the rename is done (leaving the block)
            locked = True
            if seq is not None and _COMMITTED.get(key, -1) > seq:
                raise _Superseded
        if seq is not None:
            _COMMITTED[key] = seq
        if backup:
            rotate_backups(path)
    except _Superseded:
        pass
    finally:
        if locked:
            _COMMIT_LOCK.release()
    return path


class _Superseded(Exception):
    """A newer snapshot of the same file was committed first: drop this one."""


def read_autosave(path: str | Path) -> tuple[np.ndarray, list[int], dict[str, Any]]:
    """Read an autosave file: ``(labels, corrected slices, meta)``."""
    with np.load(Path(path), allow_pickle=False) as f:
        labels, marks = f["labels"], f["corrected"]
        if not isinstance(labels, np.ndarray) or not isinstance(marks, np.ndarray):
            raise ValueError(f"{Path(path).name} holds no labels array (not an autosave file)")
        if marks.ndim != 1 or (marks.size and not np.issubdtype(marks.dtype, np.integer)):
            raise ValueError(f"{Path(path).name}: the corrected slices are not a list of numbers")
        corrected = [int(z) for z in marks]
        meta = json.loads(str(f["meta"])) if "meta" in f else {}
    return labels, corrected, meta
