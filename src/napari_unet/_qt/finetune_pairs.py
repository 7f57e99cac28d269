"""The Fine-tune dock's "also train on" list: more (image, labels) layer pairs for a round."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from napari.layers import Image, Labels
from qtpy.QtCore import Signal
from qtpy.QtWidgets import QHBoxLayout, QListWidget, QPushButton, QVBoxLayout, QWidget

from ..training.finetune_jobs import labels_snapshot
from ..training.pairs import ImagePair, pair_shape_error
from .jobs import connect_event
from .layers import image_channel_axis, same_layer, spatial_ndim

if TYPE_CHECKING:
    import napari

    from .session import Session


class PairList(QWidget):
    """Other (image, labels) layer pairs that the next round trains on too.

    Each pair contributes the slices marked as corrected in its Labels layer; the dock's
    own pair (its image and labels choices) contributes its ticked slices. A pair goes
    away with either of its layers.

    Parameters
    ----------
    viewer : napari.Viewer
        The viewer.
    session : Session
        The session (corrected marks).
    current : callable
        ``current() -> (image, labels)``: the dock's chosen layers (either may be None).
    parent : QWidget, optional
        Parent widget.
    """

    changed = Signal()

    def __init__(self, viewer: napari.Viewer, session: Session,
                 current: Callable[[], tuple[Image | None, Labels | None]],
                 parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.viewer = viewer
        self.session = session
        self._current = current
        self._pairs: list[tuple[Image, Labels]] = []
        self.list = QListWidget(self)
        self.list.setMaximumHeight(90)
        self.list.setToolTip("Each pair adds the slices marked as corrected in its labels")
        self.add_button = QPushButton("Add current pair", self)
        self.add_button.setToolTip("Keep the chosen image and labels in the round, then "
                                   "choose another pair above")
        self.remove_button = QPushButton("Remove", self)
        buttons = QHBoxLayout()
        buttons.addWidget(self.add_button)
        buttons.addWidget(self.remove_button)
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.list)
        layout.addLayout(buttons)
        self._add_callbacks()

    def _add_callbacks(self) -> None:
        self.add_button.clicked.connect(self.add_current)
        self.remove_button.clicked.connect(self.remove_selected)
        self.session.corrected_changed.connect(self._on_marks)
        connect_event(self, self.viewer.layers.events.removed, self._on_layer_removed)

    def pairs(self) -> list[tuple[Image, Labels]]:
        """The listed (image, labels) layer pairs."""
        return list(self._pairs)

    def add(self, image: Image, labels: Labels) -> None:
        """List a pair (a Labels layer is listed once: its new image replaces the old)."""
        self._pairs = [p for p in self._pairs if not same_layer(p[1], labels)]
        self._pairs.append((image, labels))
        self.refresh()

    def add_current(self, *_: Any) -> bool:
        """List the dock's chosen pair; False when a layer is not chosen."""
        image, labels = self._current()
        if image is None or labels is None:
            return False
        self.add(image, labels)
        return True

    def remove_selected(self, *_: Any) -> None:
        """Drop the selected pair."""
        row = self.list.currentRow()
        if 0 <= row < len(self._pairs):
            del self._pairs[row]
            self.refresh()

    def clear_pairs(self) -> None:
        """Drop every pair."""
        self._pairs.clear()
        self.refresh()

    def refresh(self) -> None:
        """Show each pair with its number of corrected slices."""
        self.list.clear()
        for image, labels in self._pairs:
            n = len(self.session.corrected(labels))
            self.list.addItem(f"{image.name} + {labels.name}: {n} corrected")
        self.changed.emit()

    def _on_marks(self, layer: Any) -> None:
        if any(same_layer(layer, lab) for _, lab in self._pairs):
            self.refresh()

    def _on_layer_removed(self, event: Any) -> None:
        kept = [p for p in self._pairs
                if not (same_layer(p[0], event.value) or same_layer(p[1], event.value))]
        if len(kept) != len(self._pairs):
            self._pairs = kept
            self.refresh()


def round_pairs(session: Session, chosen: tuple[Image, Labels, list[int]],
                more: list[tuple[Image, Labels]]) -> tuple[list[ImagePair], str | None]:
    """The round's pairs, their labels snapshotted so that painting can go on.

    Parameters
    ----------
    session : Session
        The session (corrected marks of the listed pairs).
    chosen : tuple
        The dock's image and labels layers and their ticked slices (first in the round).
    more : list of tuple
        The listed pairs (the chosen one among them is skipped).

    Returns
    -------
    tuple
        The pairs, and a one-line message (pairs empty) when one cannot be trained on.
    """
    image, labels, ticked = chosen
    todo = [(image, labels, ticked)] + [
        (im, lab, session.corrected(lab)) for im, lab in more if not same_layer(lab, labels)]
    for im, lab, slices in todo:
        error = pair_shape_error(ImagePair(im.data, lab.data, f"'{im.name}'", f"'{lab.name}'",
                                           image_channel_axis(im)))
        if error:
            return [], error
        if not slices:
            return [], (f"'{lab.name}' has no slice marked as corrected: mark the slices you "
                        "corrected, or remove the pair")
    out = []
    for im, lab, slices in todo:
        stack = spatial_ndim(lab) >= 3
        out.append(ImagePair(im.data, labels_snapshot(lab.data, slices if stack else None),
                             im.name, lab.name, image_channel_axis(im),
                             list(slices) if stack else [0]))
    return out, None
