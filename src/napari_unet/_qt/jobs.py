"""The job runner of the docks: a core generator in a napari ``thread_worker``.

Every heavy computation runs in a worker over a generator from the core;
:func:`start_job` wires it to a dock (progress, result, errors as notifications,
cancel, and a clean stop when the dock or the viewer window goes away);
:func:`connect_event` and :class:`DockWatcher` tie napari events to a dock's life.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Generator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from napari.qt.threading import GeneratorWorker, thread_worker
from napari.utils.notifications import show_error
from qtpy.QtCore import QEvent, QEventLoop, QObject, QThreadPool, QTimer, Signal
from qtpy.QtWidgets import QApplication, QWidget

if TYPE_CHECKING:
    import napari

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
    app = QApplication.instance()
    worker.activity = bar = _activity_bar(activity, worker)
    hooks = _Hooks(on_yield, on_return, on_finish, on_error, what)
    stop, yielded, returned, finished = _job_slots(worker, state, owner, app, bar, hooks)
    track_worker(worker)
    worker.yielded.connect(yielded)
    worker.returned.connect(returned)
    worker.finished.connect(finished)
    owner.destroyed.connect(stop)
    if app is not None:
        app.aboutToQuit.connect(stop)
    # Start from the event loop: whoever gets the worker back can connect to its signals
    # first (no result is ever emitted before a caller could listen).
    QTimer.singleShot(0, worker.start)
    return worker


def _activity_bar(activity: str | None, worker: GeneratorWorker) -> Any:
    """A bar in napari's activity dock whose Cancel quits ``worker`` (None without ``activity``)."""
    if activity is None:
        return None
    from .activity import ActivityBar

    return ActivityBar(activity, worker.quit)


@dataclass(frozen=True)
class _Hooks:
    """The dock's callbacks of one job (see :func:`start_job`)."""

    on_yield: Callable[[Any], None] | None
    on_return: Callable[[Any], None] | None
    on_finish: Callable[[], None] | None
    on_error: Callable[[str], None] | None
    what: str


def _job_slots(worker: GeneratorWorker, state: dict[str, Any], owner: QWidget, app: Any,
               bar: Any, hooks: _Hooks) -> tuple[Callable[..., None], ...]:
    """The slots :func:`start_job` connects: ``(stop, yielded, returned, finished)``.

    ``stop`` (the dock destroyed, or the application quitting) quits the worker and silences
    the dock's callbacks; ``finished`` closes the activity bar ``bar``, releases a cancelled
    core generator, disconnects ``stop`` and calls ``hooks.on_finish``.
    """
    alive = [True]  # False once the dock is gone: its callbacks must not run then

    def _stop(*_: Any) -> None:
        alive[0] = False
        try:
            worker.quit()
        except RuntimeError:  # the worker object itself is already gone
            pass

    def _yielded(value: Any) -> None:
        if alive[0] and hooks.on_yield is not None:
            hooks.on_yield(value)

    def _returned(value: Any) -> None:
        if not alive[0]:
            return
        if isinstance(value, JobFailed):
            show_error(f"{hooks.what}: {value.message}")
            if hooks.on_error is not None:
                hooks.on_error(value.message)
            return
        if hooks.on_return is not None:
            hooks.on_return(value)

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
        if alive[0] and hooks.on_finish is not None:
            hooks.on_finish()

    return _stop, _yielded, _returned, _finished


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
