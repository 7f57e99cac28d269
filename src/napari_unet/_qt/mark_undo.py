"""The "corrected" marks follow Ctrl-Z and Ctrl-Shift-Z after Segment overwrote a slice.

Segment writes into a Labels layer through its history (Ctrl-Z brings an overwritten
corrected slice back) and unmarks the slices it overwrote: they now hold a prediction.
napari's undo sends no event of its own, only the layer's ``set_data`` (when the layer is
shown again), so :class:`MarkFollower` compares each overwritten slice with the two
versions it knows, the correction before and the prediction after. When a slice turns
back into the correction, it is marked again; when it turns into the prediction again
(redo), it is unmarked. Only changes of that state act: a mark the user sets or removes
by hand while the content stays the same is left alone.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from qtpy.QtCore import QObject

from .jobs import connect_event
from .layers import unwrap
from .session import get_session

BEFORE, AFTER, OTHER = "before", "after", "other"


@dataclass
class _Overwrite:
    before: np.ndarray
    after: np.ndarray
    state: str = AFTER


def _slice(layer: Any, z: int) -> np.ndarray:
    data = layer.data
    return np.asarray(data[z] if np.ndim(data) >= 3 else data)


class MarkFollower(QObject):
    """Keeps the corrected marks of overwritten slices in step with undo and redo.

    Parameters
    ----------
    parent : QObject, optional
        Owner (the Segment dock); the layer events are disconnected when it goes.
    """

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._records: dict[int, tuple[Any, dict[int, _Overwrite]]] = {}

    @contextlib.contextmanager
    def overwrite(self, labels: Any, slices: Sequence[int]) -> Iterator[None]:
        """Wrap a write that replaces the corrected ``slices`` of ``labels``.

        The slices are copied before and after the write, and unmarked after it.
        """
        if labels is None or not slices:
            yield
            return
        before = {int(z): np.array(_slice(labels, z)) for z in slices}
        yield
        layer = unwrap(labels)
        key = id(layer)
        if key not in self._records:
            self._records[key] = (layer, {})
            connect_event(self, layer.events.set_data, lambda *_: self.check(layer))
        records = self._records[key][1]
        for z, old in before.items():
            records[z] = _Overwrite(old, np.array(_slice(layer, z)))
        session = get_session()
        session.set_corrected(layer, [z for z in session.corrected(layer) if z not in before])

    def check(self, labels: Any) -> list[int]:
        """Re-mark slices that hold their correction again, unmark re-done predictions.

        Returns
        -------
        list of int
            The slices whose mark changed.
        """
        layer = unwrap(labels)
        entry = self._records.get(id(layer))
        if entry is None or entry[0] is not layer:
            return []
        session = get_session()
        marks, changed = set(session.corrected(layer)), []
        for z, rec in entry[1].items():
            now = _slice(layer, z)
            state = BEFORE if np.array_equal(now, rec.before) else (
                AFTER if np.array_equal(now, rec.after) else OTHER)
            if state == rec.state:
                continue
            rec.state = state
            if state == BEFORE and z not in marks:
                marks.add(z)
                changed.append(z)
            elif state == AFTER and z in marks:
                marks.discard(z)
                changed.append(z)
        if changed:
            session.set_corrected(layer, sorted(marks))
        return changed
