"""Small pieces shared by the docks: layer pickers, slice helpers and the job runner.

Every heavy computation runs in a napari ``thread_worker`` over a generator from the
core; :func:`start_job` wires it to a dock (progress, result, errors as notifications,
cancel, and a clean stop when the dock or the viewer window goes away).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from napari.qt.threading import GeneratorWorker, thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QEventLoop, QObject, QThreadPool, QTimer, Signal
from qtpy.QtWidgets import QApplication, QComboBox, QWidget

if TYPE_CHECKING:
    import napari
    from napari.layers import Layer

logger = logging.getLogger(__name__)

#: Every worker of this plugin that has not finished yet (quit and awaited at exit).
RUNNING: set[Any] = set()
#: How long the application's exit waits for running workers to stop (ms).
QUIT_WAIT_MS = 10_000


def stop_all_jobs(wait_ms: int = QUIT_WAIT_MS) -> bool:
    """Ask every running worker to stop and wait for the threads to end.

    Connected to ``QApplication.aboutToQuit``: a worker that still runs when Python tears
    down the Qt objects would emit on a deleted signal object and abort the process.

    Parameters
    ----------
    wait_ms : int
        Longest wait in milliseconds.

    Returns
    -------
    bool
        Whether every worker thread ended in time.
    """
    deadline = time.monotonic() + wait_ms / 1000
    pool = QThreadPool.globalInstance()
    while RUNNING and time.monotonic() < deadline:
        for worker in list(RUNNING):
            try:
                worker.quit()
            except RuntimeError:
                RUNNING.discard(worker)
        # a worker may still wait for its (queued) start: let it start, see the request
        # and finish, so that no thread outlives the Qt objects it reports to
        QApplication.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
        pool.waitForDone(50)
    return not RUNNING and bool(pool.waitForDone(max(0, int(1000 * (deadline - time.monotonic())))))


_QUIT_HOOKED = [False]


def track_worker(worker: Any) -> Any:
    """Register ``worker`` in :data:`RUNNING` until it finishes; returns it."""
    app = QApplication.instance()
    if app is not None and not _QUIT_HOOKED[0]:
        app.aboutToQuit.connect(stop_all_jobs)
        _QUIT_HOOKED[0] = True
    RUNNING.add(worker)
    worker.finished.connect(lambda: RUNNING.discard(worker))
    return worker


@dataclass
class JobFailed:
    """Returned by a job instead of raising: the error becomes a notification."""

    error: BaseException

    @property
    def message(self) -> str:
        """The core's message (or the exception type when it has none)."""
        return str(self.error) or type(self.error).__name__


def _guarded(state: dict[str, Any]) -> Generator:
    """Drive ``state["factory"]()`` and turn its exceptions into a :class:`JobFailed`."""
    try:
        inner = state.pop("factory")()
        state["inner"] = inner
        result = yield from inner
    except Exception as err:  # noqa: BLE001 - every failure becomes a notification
        logger.debug("napari-unet job failed", exc_info=True)
        return JobFailed(err)
    return result


def start_job(
    factory: Callable[[], Generator],
    *,
    owner: QWidget,
    viewer: napari.Viewer | None = None,
    on_yield: Callable[[Any], None] | None = None,
    on_return: Callable[[Any], None] | None = None,
    on_finish: Callable[[], None] | None = None,
    on_error: Callable[[str], None] | None = None,
    what: str = "napari-unet",
    activity: str | None = None,
) -> GeneratorWorker:
    """Run a generator in a napari thread worker and connect it to a dock.

    Parameters
    ----------
    factory : callable
        Called in the worker thread; returns the generator to drive (a core
        generator, or a small generator that ``yield from``-s one).
    owner : QWidget
        The dock. When it is destroyed (closing napari destroys its docks) or the
        application quits, the job is stopped and the callbacks are not called.
    viewer : napari.Viewer, optional
        The viewer the results go to (unused; closing it destroys ``owner``).
    on_yield, on_return, on_finish : callable, optional
        Called in the GUI thread with each yielded value, with the returned value
        (not on failure or cancel) and at the very end (always).
    on_error : callable, optional
        Called in the GUI thread with the error message when the job failed (after the
        notification), e.g. to update the dock's status line.
    what : str
        Prefix of the error notification.
    activity : str, optional
        Also show the job in napari's activity dock under this description, with a Cancel
        button (``worker.activity``, an :class:`~.activity.ActivityBar`, takes updates).

    Returns
    -------
    GeneratorWorker
        The worker, started as soon as control returns to the Qt event loop;
        ``worker.quit()`` cancels at the next yield.
    """
    state: dict[str, Any] = {"factory": factory}
    worker = thread_worker(_guarded, start_thread=False)(state)
    alive = [True]  # False once the dock is gone: its callbacks must not run then
    app = QApplication.instance()

    def _stop(*_: Any) -> None:
        alive[0] = False
        try:
            worker.quit()
        except RuntimeError:  # the worker object itself is already gone
            pass

    def _yielded(value: Any) -> None:
        if alive[0] and on_yield is not None:
            on_yield(value)

    def _returned(value: Any) -> None:
        if not alive[0]:
            return
        if isinstance(value, JobFailed):
            show_error(f"{what}: {value.message}")
            if on_error is not None:
                on_error(value.message)
            return
        if on_return is not None:
            on_return(value)

    def _finished() -> None:
        if bar is not None:
            bar.close()
        inner = state.pop("inner", None)
        if inner is not None:  # cancelled: release the suspended core generator now
            inner.close()
        state.clear()
        signals = [owner.destroyed] if alive[0] else []  # a dead owner has no signals
        if app is not None:
            signals.append(app.aboutToQuit)
        for signal in signals:
            try:
                signal.disconnect(_stop)
            except (TypeError, RuntimeError):
                pass
        if alive[0] and on_finish is not None:
            on_finish()

    bar = None
    if activity is not None:
        from .activity import ActivityBar

        bar = ActivityBar(activity, worker.quit)
    worker.activity = bar
    track_worker(worker)
    worker.yielded.connect(_yielded)
    worker.returned.connect(_returned)
    worker.finished.connect(_finished)
    owner.destroyed.connect(_stop)
    if app is not None:
        app.aboutToQuit.connect(_stop)
    # Start from the event loop: whoever gets the worker back can connect to its signals
    # first (no result is ever emitted before a caller could listen).
    QTimer.singleShot(0, worker.start)
    return worker


def connect_event(owner: QObject, emitter: Any, callback: Callable) -> None:
    """Connect a napari event to ``callback`` and disconnect it when ``owner`` dies."""
    emitter.connect(callback)

    def _disconnect(*_: Any) -> None:
        try:
            emitter.disconnect(callback)
        except (ValueError, RuntimeError, TypeError):
            pass

    owner.destroyed.connect(_disconnect)


class DockWatcher(QObject):
    """Tells when a dock widget is closed (napari re-parents it to None) or destroyed.

    napari's close button removes the dock and calls ``widget.setParent(None)``; the widget
    object lives on, so ``destroyed`` alone never fires then.

    Parameters
    ----------
    widget : QWidget
        The dock's widget (the one napari puts in the dock).
    """

    #: The dock was closed or its widget destroyed.
    closed = Signal()

    def __init__(self, widget: QWidget) -> None:
        super().__init__(widget)
        self._widget = widget
        self._fired = False
        widget.installEventFilter(self)
        widget.destroyed.connect(self._fire)

    def eventFilter(self, obj: QObject, event: QEvent) -> bool:  # noqa: N802 - Qt API
        # getattr: at teardown Qt may still call a watcher whose Python state was cleared
        widget = getattr(self, "_widget", None)
        if widget is not None and obj is widget and event.type() == QEvent.Type.ParentChange:
            try:
                orphan = widget.parent() is None
            except RuntimeError:
                orphan = True
            if orphan and self._was_docked:
                self._fire()
            self._was_docked = not orphan
        return False

    _was_docked = False

    def _fire(self, *_: Any) -> None:
        if not getattr(self, "_fired", True):
            self._fired = True
            self.closed.emit()


class LayerCombo(QComboBox):
    """A combo box listing the viewer's layers of some types, kept in sync.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    layer_type : type or tuple of type
        Layer classes to list, e.g. ``napari.layers.Image``.
    parent : QWidget, optional
        Parent widget.
    prefer : callable, optional
        ``prefer(layers) -> layer or None``: the layer to choose when nothing is chosen
        yet (or the chosen one went away). With it the list starts with an empty entry
        ("none"), chosen when ``prefer`` returns None or when the chosen layer is deleted:
        no other layer is ever picked behind the user's back.
    """

    def __init__(self, viewer: napari.Viewer, layer_type: Any, parent: QWidget | None = None,
                 prefer: Callable[[list[Layer]], Layer | None] | None = None):
        super().__init__(parent)
        self._viewer = viewer
        self._type = layer_type
        self._prefer = prefer
        self.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToMinimumContentsLengthWithIcon)
        self.setMinimumContentsLength(12)
        self.refresh()
        self._add_callbacks()

    def _add_callbacks(self) -> None:
        events = self._viewer.layers.events
        for emitter in (events.inserted, events.removed, events.moved, events.changed):
            connect_event(self, emitter, self.refresh)
        connect_event(self, events.inserted, self._watch_name)
        for layer in self._viewer.layers:
            layer.events.name.connect(self.refresh)

    def _watch_name(self, event: Any) -> None:
        event.value.events.name.connect(self.refresh)

    def refresh(self, *_: Any) -> None:
        """Re-list the layers, keeping the current choice when it still exists."""
        current = self.currentText()
        layers = [lay for lay in self._viewer.layers if isinstance(lay, self._type)]
        names = [lay.name for lay in layers]
        self.blockSignals(True)
        self.clear()
        if self._prefer is not None:
            self.addItem("")
        self.addItems(names)
        if current in names:
            self.setCurrentText(current)
        elif self._prefer is not None and not current:  # a vanished choice is not replaced
            chosen = self._prefer(layers)
            self.setCurrentText(chosen.name if chosen is not None else "")
        self.blockSignals(False)
        if self.currentText() != current:
            self.currentTextChanged.emit(self.currentText())

    def layer(self) -> Layer | None:
        """Return the selected layer, or None."""
        name = self.currentText()
        if name and name in self._viewer.layers:
            return self._viewer.layers[name]
        return None

    def set_layer(self, layer: Layer | str) -> None:
        """Select ``layer`` (or a layer name)."""
        self.refresh()
        self.setCurrentText(layer if isinstance(layer, str) else layer.name)


def prefer_labels(viewer: napari.Viewer, first: Callable[[], str | None] = lambda: None,
                  ) -> Callable[[list[Layer]], Layer | None]:
    """A ``prefer`` for :class:`LayerCombo` of Labels layers.

    The layer named ``first()`` (the one Segment writes), else the selected Labels layer
    when it is visible, else the first visible one; never a hidden layer (e.g. a sample's
    ground truth, which napari selects when the sample opens).
    """

    def choose(layers: list[Layer]) -> Layer | None:
        name = first()
        by_name = {lay.name: lay for lay in layers}
        if name and name in by_name:
            return by_name[name]
        active = viewer.layers.selection.active
        if active is not None and active.visible and any(lay is active for lay in layers):
            return active
        return next((lay for lay in layers if lay.visible), None)

    return choose


def unwrap(obj: Any) -> Any:
    """Return the object behind napari's ``PublicOnlyProxy`` (plugin docks get proxies)."""
    return getattr(obj, "__wrapped__", obj)


def same_layer(a: Any, b: Any) -> bool:
    """Whether ``a`` and ``b`` are the same layer, proxied or not."""
    return a is not None and b is not None and unwrap(a) is unwrap(b)


def image_channel_axis(layer: Layer) -> int | None:
    """Channel axis of an Image layer's data: ``-1`` for RGB(A) layers, else None."""
    return -1 if getattr(layer, "rgb", False) else None


def spatial_ndim(layer: Layer) -> int:
    """Spatial dimensions of a layer (``layer.ndim`` excludes the RGB axis already)."""
    return int(layer.ndim)


def current_slice(viewer: napari.Viewer, layer: Layer) -> int:
    """Index of the Z slice of ``layer`` shown in the viewer (0 for 2D layers)."""
    if spatial_ndim(layer) < 3:
        return 0
    n = int(layer.data.shape[0])
    try:
        pos = layer.world_to_data(viewer.dims.point)
        z = int(np.round(pos[-3]))
    except (IndexError, ValueError, TypeError):
        z = int(viewer.dims.current_step[-3])
    return int(np.clip(z, 0, n - 1))


def go_to_slice(viewer: napari.Viewer, layer: Layer, z: int) -> None:
    """Show slice ``z`` of a ``(Z, Y, X)`` layer in the viewer (``dims.set_current_step``)."""
    if spatial_ndim(layer) < 3:
        return
    axis = viewer.dims.ndim - spatial_ndim(layer)
    world_z = float(layer.data_to_world([z, 0, 0])[0])
    rng = viewer.dims.range[axis]
    step = int(np.round((world_z - rng.start) / (rng.step or 1.0)))
    viewer.dims.set_current_step(axis, step)


def n_slices(layer: Layer) -> int:
    """Return the number of Z slices (1 for 2D layers)."""
    return int(layer.data.shape[0]) if spatial_ndim(layer) >= 3 else 1
