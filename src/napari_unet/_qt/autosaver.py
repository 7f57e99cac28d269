"""The autosaver: writes a Labels layer and its marks after each change, in a worker.

The GUI thread copies nothing but what is about to be overwritten: the worker keeps one
mirror of the labels and brings it up to date slice by slice, copying only the slices
that differ from the layer (painting, Segment, undo alike), then writes those slices
only (:func:`~napari_unet.autosave.write_autosave` with ``dirty``). So a save costs the
GUI thread no time, its disk and CPU work is one slice per painted slice, and the memory
stays one copy of the labels however often the user paints.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QObject, QTimer, Signal

from ..autosave import autosave_path, source_path, write_autosave
from .jobs import JobFailed, connect_event, track_worker
from .layers import same_layer
from .session import get_session

if TYPE_CHECKING:
    from napari.layers import Image, Labels

DEBOUNCE_MS = 1000
_SEQ = itertools.count()


def sync_mirror(mirror: np.ndarray | None, live: Any,
                pinned: dict[int, np.ndarray] | None = None) -> tuple[np.ndarray, list[int]]:
    """Bring ``mirror`` up to date with ``live``, one slice at a time.

    Parameters
    ----------
    mirror : numpy.ndarray or None
        The previous copy (None, or another shape or dtype: a new copy is made).
    live : array-like
        The layer's data (read in the worker while the user may paint: a slice caught
        mid-stroke is saved again after the stroke).
    pinned : dict, optional
        ``{z: slice}`` copies taken in the GUI thread that win over ``live`` (the
        corrected slices just before Segment overwrites them).

    Returns
    -------
    tuple
        The mirror and the slices copied.
    """
    live = np.asarray(live)
    if mirror is None or mirror.shape != live.shape or mirror.dtype != live.dtype:
        mirror = np.array(live)
        copied = list(range(live.shape[0])) if live.ndim >= 3 else [-1]
    elif live.ndim < 3:
        copied = [] if np.array_equal(mirror, live) else [-1]
        if copied:
            mirror[...] = live
    else:
        copied = []
        for z in range(live.shape[0]):
            if not np.array_equal(mirror[z], live[z]):
                mirror[z] = live[z]
                copied.append(z)
    for z, values in (pinned or {}).items():
        if live.ndim >= 3:
            mirror[z] = values
        else:
            mirror[...] = values
    return mirror, copied


class Autosaver(QObject):
    """Saves a Labels layer and its marks after each change (debounced), in a worker.

    ``save_now()`` writes at once without waiting (used when a slice is marked
    corrected, with a backup); writes never overlap and keep their order.

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
        self.last_copied: list[int] = []
        self._mirror: np.ndarray | None = None
        self._queued: dict[str, Any] | None = None
        self._marks: set[int] = set()
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.save_now)
        session = get_session()
        session.corrected_changed.connect(self._on_marks)
        session.overwriting.connect(self._on_overwriting)

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
        self._mirror = None
        self._marks = set(get_session().corrected(labels)) if labels is not None else set()
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
        """Save at once; keep a backup when a slice was newly marked as corrected."""
        if self.enabled and same_layer(layer, self.labels):
            marks = set(get_session().corrected(layer))
            self.save_now(backup=bool(marks - self._marks))
            self._marks = marks

    def _on_overwriting(self, layer: Any, slices: Any) -> None:
        """Back up the corrected slices as they are, before Segment replaces them."""
        if self.enabled and same_layer(layer, self.labels):
            data = layer.data
            pinned = {int(z): np.array(data[z] if np.ndim(data) >= 3 else data)
                      for z in slices}
            self.save_now(backup=True, pinned=pinned)

    def save_now(self, backup: bool = False, pinned: dict[int, np.ndarray] | None = None,
                 ) -> Path | None:
        """Write the labels and marks now, in a worker; returns the path.

        Parameters
        ----------
        backup : bool
            Also keep the written file as the newest rotating backup.
        pinned : dict, optional
            Slices copied now that the write must use (see :func:`sync_mirror`).
        """
        self.timer.stop()
        if self.labels is None or not self.enabled:
            return None
        layer = self.labels
        meta = {"layer": layer.name, "shape": list(layer.data.shape),
                "image": str(source_path(self.image) or "") if self.image is not None else ""}
        job = {"path": self.path, "live": layer.data, "corrected": get_session().corrected(layer),
               "meta": meta, "seq": next(_SEQ), "backup": backup, "pinned": dict(pinned or {})}
        if self.worker is not None:  # the newest state wins; written right after
            if self._queued is not None and self._queued["path"] == job["path"]:
                job["backup"] = job["backup"] or self._queued["backup"]
                if self._queued["pinned"]:  # a pinned backup must not be lost: write it first
                    job["pinned"] = {**self._queued["pinned"], **job["pinned"]}
            self._queued = job
        else:
            self._start(job)
        return job["path"]

    def _start(self, job: dict[str, Any]) -> None:
        mirror = self._mirror
        self._mirror = None  # the worker owns it until it returns it

        @thread_worker(start_thread=False)
        def _write() -> tuple[Any, np.ndarray | None, list[int]]:
            try:
                arr, copied = sync_mirror(mirror, job["live"], job["pinned"])
            except (ValueError, TypeError, MemoryError) as err:
                return JobFailed(err), None, []
            dirty = sorted(set(copied) | set(job["pinned"]))  # only these slices are written
            try:
                out = write_autosave(job["path"], arr, job["corrected"], job["meta"],
                                     job["seq"], backup=job["backup"], dirty=dirty)
            except OSError as err:  # a full disk or a read-only folder: tell the user, go on
                return JobFailed(err), None, copied  # no mirror: the next save writes all
            return out, arr, copied

        self.worker = track_worker(_write())
        self.worker.returned.connect(self._on_saved)
        self.worker.finished.connect(self._on_finished)
        self.worker.start()

    def _on_saved(self, result: tuple[Any, np.ndarray | None, list[int]]) -> None:
        out, mirror, copied = result
        if mirror is not None and self._mirror is None:
            self._mirror = mirror
        self.last_copied = copied
        if isinstance(out, JobFailed):
            show_error(f"Autosave failed: {out.message}")
            return
        self.saved.emit(str(out))

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
            try:
                out = write_autosave(self.path, np.asarray(layer.data),
                                     get_session().corrected(layer),
                                     {"layer": layer.name, "shape": list(layer.data.shape)},
                                     next(_SEQ))
            except (OSError, ValueError, MemoryError) as err:  # as the worker path: say it
                show_error(f"Autosave failed: {JobFailed(err).message}")
                return
            self.saved.emit(str(out))
