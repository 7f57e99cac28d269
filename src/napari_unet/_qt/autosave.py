"""Autosave of corrected labels and the marked slices, and resuming from the file.

The file is a ``.npz`` holding ``labels``, ``corrected`` (the marked slice indices) and
``meta`` (JSON text: layer name, image path, shape, time). It lies beside the image
(``<image>.autosave.npz``) when the image came from a file, else in a folder (default
``~/.napari-unet/autosave``, or ``$NAPARI_UNET_AUTOSAVE_DIR``). Every write goes to a
temporary file first and is moved into place with ``os.replace``, so a crash leaves
either the old or the new file, never a broken one.
"""

from __future__ import annotations

import datetime as dt
import itertools
import json
import os
import re
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QTimer, Signal

from .common import JobFailed, connect_event, same_layer
from .session import get_session

if TYPE_CHECKING:
    from napari.layers import Image, Labels

SUFFIX = ".autosave.npz"
DEBOUNCE_MS = 1000


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
        The ``.autosave.npz`` path.
    """
    src = source_path(image) if image is not None else None
    src = src or source_path(labels)
    if folder is None and src is not None and not src.is_dir():
        stem = src.name.removesuffix(src.suffix)  # keep dots: a.1.tif and a.2.tif differ
        return src.with_name(f"{stem}.{_safe(labels.name)}{SUFFIX}")
    return Path(folder or default_autosave_dir()) / f"{_safe(labels.name)}{SUFFIX}"


#: Newest snapshot number committed per file: an older snapshot never replaces a newer one.
_COMMITTED: dict[str, int] = {}
_COMMIT_LOCK = threading.Lock()


def write_autosave(path: str | Path, labels: np.ndarray, corrected: list[int],
                   meta: dict[str, Any] | None = None, seq: int | None = None) -> Path:
    """Write labels and marks atomically (temporary file, fsync, ``os.replace``).

    ``seq`` numbers snapshots: a write whose ``seq`` is older than one already committed to
    the same file is dropped (a background write finishing after a synchronous flush).

    Returns
    -------
    pathlib.Path
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    info = {"saved": dt.datetime.now().isoformat(timespec="seconds"), **(meta or {})}
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            np.savez_compressed(fh, labels=np.asarray(labels),
                                corrected=np.asarray(sorted(corrected), np.int64),
                                meta=np.asarray(json.dumps(info)))
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private; an autosave is an ordinary file
        with _COMMIT_LOCK:
            key = str(path.resolve())
            if seq is not None and _COMMITTED.get(key, -1) > seq:
                Path(tmp).unlink(missing_ok=True)
                return path
            os.replace(tmp, path)
            if seq is not None:
                _COMMITTED[key] = seq
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def read_autosave(path: str | Path) -> tuple[np.ndarray, list[int], dict[str, Any]]:
    """Read an autosave file: ``(labels, corrected slices, meta)``."""
    with np.load(Path(path), allow_pickle=False) as f:
        labels = f["labels"]
        corrected = [int(z) for z in f["corrected"]]
        meta = json.loads(str(f["meta"])) if "meta" in f else {}
    return labels, corrected, meta


@thread_worker(start_thread=False)
def _write_job(path: Path, labels: np.ndarray, corrected: list[int], meta: dict,
               seq: int | None = None) -> Path | JobFailed:
    try:
        return write_autosave(path, labels, corrected, meta, seq)
    except OSError as err:  # a full disk or a read-only folder: tell the user, go on
        return JobFailed(err)


_SEQ = itertools.count()


class Autosaver(QObject):
    """Saves a Labels layer and its marks after each change (debounced), in a worker.

    ``save_now()`` snapshots the labels at once and writes them without waiting (used
    when a slice is marked corrected); writes never overlap and keep their order.

    Parameters
    ----------
    parent : QObject, optional
        Owner.
    """

    #: Emitted with the path after each completed write.
    saved = Signal(str)

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self.enabled = True
        self.folder: Path | None = None
        self.labels: Labels | None = None
        self.image: Image | None = None
        self.worker: Any = None
        self._queued: tuple | None = None
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.save_now)
        get_session().corrected_changed.connect(self._on_marks)

    def attach(self, labels: Labels | None, image: Image | None = None) -> None:
        """Follow ``labels`` (and remember its image, for the file's location)."""
        if labels is self.labels or same_layer(labels, self.labels):
            self.image = image
            return
        self.flush()
        old = self.labels
        if old is not None:
            for emitter in (old.events.paint, old.events.data):
                emitter.disconnect(self.schedule)
        self.labels, self.image = labels, image
        if labels is not None:
            connect_event(self, labels.events.paint, self.schedule)
            connect_event(self, labels.events.data, self.schedule)

    @property
    def path(self) -> Path | None:
        """Where the attached labels are saved."""
        if self.labels is None:
            return None
        return autosave_path(self.labels, self.image, self.folder)

    def schedule(self, *_: Any) -> None:
        """Save after the labels stop changing for a second."""
        if self.enabled and self.labels is not None:
            self.timer.start()

    def _on_marks(self, layer: Any) -> None:
        if self.enabled and same_layer(layer, self.labels):
            self.save_now()

    def save_now(self) -> Path | None:
        """Snapshot the labels and marks now and write them in a worker; returns the path."""
        self.timer.stop()
        if self.labels is None or not self.enabled:
            return None
        path = self.path
        layer = self.labels
        meta = {"layer": layer.name, "shape": list(layer.data.shape),
                "image": str(source_path(self.image) or "") if self.image is not None else ""}
        job = (path, np.array(layer.data), get_session().corrected(layer), meta, next(_SEQ))
        if self.worker is not None:
            self._queued = job  # the newest snapshot wins; written right after
        else:
            self._start(job)
        return path

    def _start(self, job: tuple) -> None:
        self.worker = _write_job(*job)
        self.worker.returned.connect(self._on_saved)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _on_saved(self, result: Path | JobFailed) -> None:
        if isinstance(result, JobFailed):
            show_error(f"Autosave failed: {result.message}")
            return
        self.saved.emit(str(result))

    def _on_finished(self) -> None:
        self.worker = None
        if self._queued is not None:
            job, self._queued = self._queued, None
            self._start(job)

    def flush(self) -> None:
        """Write a pending (debounced) save synchronously, e.g. before closing."""
        if self.timer.isActive() and self.labels is not None and self.enabled:
            self.timer.stop()
            layer = self.labels
            self._queued = None  # superseded by this newer, synchronous snapshot
            write_autosave(self.path, np.asarray(layer.data), get_session().corrected(layer),
                           {"layer": layer.name, "shape": list(layer.data.shape)}, next(_SEQ))
