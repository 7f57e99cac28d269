"""Coalescing fast updates (progress, status lines) so that the GUI thread stays free."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from qtpy.QtCore import QObject, QTimer

#: Progress and status lines are updated at most this often (ms).
PROGRESS_MS = 100

_NOTHING = object()


class Throttle(QObject):
    """Deliver the newest of many values at most every ``interval_ms``.

    The first value goes out at once; later ones within the interval are coalesced and
    only the newest is delivered when it ends.

    Parameters
    ----------
    callback : callable
        Called in the GUI thread with a value.
    interval_ms : int
        Shortest time between two calls.
    parent : QObject, optional
        Owner.
    """

    def __init__(self, callback: Callable[[Any], None], interval_ms: int = PROGRESS_MS,
                 parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._callback = callback
        self._pending: Any = _NOTHING
        self.calls = 0
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(int(interval_ms))
        self.timer.timeout.connect(self._on_timeout)

    def push(self, value: Any) -> None:
        """Offer a value: delivered now, or when the interval ends if it is the newest."""
        if self.timer.isActive():
            self._pending = value
            return
        self._deliver(value)
        self.timer.start()

    def _on_timeout(self) -> None:
        if self._pending is not _NOTHING:
            value, self._pending = self._pending, _NOTHING
            self._deliver(value)
            self.timer.start()

    def flush(self) -> None:
        """Deliver a waiting value now (e.g. when the job ends)."""
        self.timer.stop()
        self._on_timeout()
        self.timer.stop()

    def discard(self) -> None:
        """Drop a waiting value."""
        self.timer.stop()
        self._pending = _NOTHING

    def _deliver(self, value: Any) -> None:
        self.calls += 1
        self._callback(value)
