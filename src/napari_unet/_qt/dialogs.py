"""The questions the docks ask before a step that could lose or mislead work."""

from __future__ import annotations

from collections.abc import Sequence

from qtpy.QtWidgets import QMessageBox, QWidget


def ask_overwrite(parent: QWidget, slices: Sequence[int]) -> bool:
    """Ask whether corrected ``slices`` may be overwritten (a modal QMessageBox)."""
    listed = ", ".join(str(z) for z in slices)
    answer = QMessageBox.question(
        parent, "Overwrite corrected slices?",
        f"Slice(s) {listed} are marked as corrected. Overwrite them with the new "
        "prediction?\n(No: keep your corrections and segment the other slices only.)",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes


def ask_train_unmarked(parent: QWidget, slices: Sequence[int]) -> bool:
    """Ask before training on ticked slices that were never marked as corrected."""
    listed = ", ".join(str(z) for z in slices)
    answer = QMessageBox.warning(
        parent, "Train on slices that are not marked corrected?",
        f"Slice(s) {listed} are ticked but not marked as corrected. If they still hold the "
        "model's own prediction, training on them teaches the model its own mistakes.\n\n"
        "Train on them anyway?",
        QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No,
        QMessageBox.StandardButton.No,
    )
    return answer == QMessageBox.StandardButton.Yes
