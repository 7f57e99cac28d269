"""A tickable list of the annotated slices to train on."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtCore import Qt
from qtpy.QtWidgets import QListWidget, QListWidgetItem, QWidget


class SliceList(QListWidget):
    """One checkable row per annotated or corrected slice.

    Only the slices marked as corrected are ticked by default: a slice that holds labels
    but was never marked may be the model's own prediction, and training on it teaches
    the model its own mistakes. The user may tick such slices (the dock then warns); the
    user's own ticks are kept across refreshes.

    Parameters
    ----------
    parent : QWidget, optional
        Parent widget.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self._manual: dict[int, bool] = {}
        self._filling = False
        self.setMaximumHeight(120)
        self._add_callbacks()

    def _add_callbacks(self) -> None:
        self.itemChanged.connect(self._on_item_changed)

    def _on_item_changed(self, item: QListWidgetItem) -> None:
        if not self._filling:
            z = int(item.data(Qt.ItemDataRole.UserRole))
            self._manual[z] = item.checkState() == Qt.CheckState.Checked

    def reset(self) -> None:
        """Forget the user's ticks (e.g. for another layer)."""
        self._manual.clear()

    def fill(self, annotated: Sequence[int], corrected: Sequence[int], stack: bool = True) -> None:
        """Show ``annotated`` ∪ ``corrected`` slices, ticking as described above."""
        marked = set(corrected)
        rows = sorted(set(annotated) | marked)
        self._filling = True
        self.clear()
        for z in rows:
            text = f"slice {z}" if stack else "image"
            if z in marked:
                text += "  ✓ corrected"
            elif z not in set(annotated):
                text += "  (empty)"
            item = QListWidgetItem(text, self)
            item.setData(Qt.ItemDataRole.UserRole, z)
            item.setFlags(item.flags() | Qt.ItemFlag.ItemIsUserCheckable)
            default = z in marked
            checked = self._manual.get(z, default)
            item.setCheckState(Qt.CheckState.Checked if checked else Qt.CheckState.Unchecked)
        self._filling = False

    def checked(self) -> list[int]:
        """Return the ticked slices."""
        out = []
        for i in range(self.count()):
            item = self.item(i)
            if item.checkState() == Qt.CheckState.Checked:
                out.append(int(item.data(Qt.ItemDataRole.UserRole)))
        return out

    def set_checked(self, slices: Sequence[int]) -> None:
        """Tick exactly ``slices``."""
        wanted = set(slices)
        for i in range(self.count()):
            item = self.item(i)
            z = int(item.data(Qt.ItemDataRole.UserRole))
            item.setCheckState(Qt.CheckState.Checked if z in wanted else Qt.CheckState.Unchecked)

    def rows(self) -> list[int]:
        """All listed slices."""
        return [int(self.item(i).data(Qt.ItemDataRole.UserRole)) for i in range(self.count())]
