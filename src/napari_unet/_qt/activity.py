"""A job's progress bar in napari's activity dock, with a Cancel button that stops it.

napari lists every :class:`napari.utils.progress` created in the GUI thread in its
activity dock (bottom right of the window); a ``cancelable_progress`` gets a Cancel
button there. Its ``cancel()`` only raises a flag that a ``for`` loop over it would check,
so :class:`ActivityBar` also calls the job's cancel callback (``worker.quit``) at once.
The docks update the bar from their throttled progress callbacks (at most ten times a
second), never once per tile or step.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


def _bar_class() -> type:
    from napari.utils.progress import cancelable_progress

    class _CancelNow(cancelable_progress):
        """A cancelable progress whose Cancel button stops the job right away."""

        def cancel(self) -> None:
            super().cancel()
            if self.cancel_callback is not None:
                self.cancel_callback()

    return _CancelNow


class ActivityBar:
    """One job's bar in the activity dock.

    Parameters
    ----------
    desc : str
        Its description ("Segment: nuclei", "Fine-tune: tiny").
    cancel : callable
        Called when the user presses Cancel in the activity dock.
    """

    def __init__(self, desc: str, cancel: Callable[[], Any]) -> None:
        self.bar = _bar_class()(total=0, desc=desc, cancel_callback=cancel)  # busy until set
        self.closed = False

    @property
    def canceled(self) -> bool:
        """Whether Cancel was pressed in the activity dock."""
        return bool(self.bar.is_canceled)

    def set(self, done: int, total: int, desc: str | None = None) -> None:
        """Show ``done`` of ``total`` (and a new description)."""
        if self.closed:
            return
        total = max(0, int(total))
        if total != self.bar.total:
            self.bar.total = total
        self.bar.update(max(0, min(int(done), total)) - self.bar.n)
        if desc is not None and desc != self.bar.desc:
            self.bar.set_description(desc)

    def close(self) -> None:
        """Remove the bar from the activity dock (once)."""
        if not self.closed:
            self.closed = True
            self.bar.close()
