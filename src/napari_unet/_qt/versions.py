"""Model versions of this session: roll back to one, save it, or export it for bioimage.io."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from napari.utils.notifications import show_error, show_info
from qtpy.QtWidgets import QComboBox, QFileDialog, QGroupBox, QHBoxLayout, QPushButton, QWidget

from .session import get_session


class VersionsPanel(QGroupBox):
    """A list of the session's model versions with "Use this version", "Save…" and "Export…".

    Parameters
    ----------
    parent : QWidget, optional
        Parent widget.
    """

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__("Model versions", parent)
        self.session = get_session()
        self.combo = QComboBox(self)
        self.combo.setToolTip("The current version is what Segment uses and Fine-tune starts from")
        self.use_button = QPushButton("Roll back / use", self)
        self.use_button.setToolTip("Make the chosen version current")
        self.save_button = QPushButton("Save…", self)
        self.export_button = QPushButton("Export…", self)
        self.export_button.setToolTip("Write a bioimage.io model package (.zip) for the BioImage "
                                      "Model Zoo, deepImageJ, ilastik…")
        layout = QHBoxLayout(self)
        layout.addWidget(self.combo, 1)
        layout.addWidget(self.use_button)
        layout.addWidget(self.save_button)
        layout.addWidget(self.export_button)
        self._fill()
        self._add_callbacks()

    def _add_callbacks(self) -> None:
        self.use_button.clicked.connect(self.use_selected)
        self.save_button.clicked.connect(self._save_dialog)
        self.export_button.clicked.connect(self._export_dialog)
        self.session.versions_changed.connect(self._fill)
        self.session.current_changed.connect(self._fill)

    def _fill(self, *_: Any) -> None:
        self.combo.blockSignals(True)
        self.combo.clear()
        current = self.session.current.name
        for version in self.session.versions():
            mark = "● " if version.name == current else ""
            self.combo.addItem(f"{mark}{version.name}", version.name)
        self.combo.setCurrentIndex(self.session.names().index(current))
        self.combo.blockSignals(False)

    def selected_name(self) -> str:
        """Name of the version chosen in the list."""
        return str(self.combo.currentData())

    def use_selected(self, *_: Any) -> None:
        """Make the chosen version current (roll back)."""
        self.session.set_current(self.selected_name())

    def _save_dialog(self) -> None:
        name = self.selected_name()
        default = f"{name.split(' (')[0].replace(' ', '_')}.pt"
        path, _ = QFileDialog.getSaveFileName(self, "Save model", default,
                                              "napari-unet model (*.pt)")
        if path:
            self.save(path)

    def save(self, path: str | Path, name: str | None = None) -> Path | None:
        """Save version ``name`` (default: the chosen one) to ``path``."""
        from ..model_files import save_model

        version = self.session.get(name or self.selected_name())
        try:
            out = save_model(version.get_model(), path)
        except (OSError, ValueError) as err:
            show_error(f"Save model: {err}")
            return None
        show_info(f"Saved {version.name} to {out}")
        return Path(out)

    def _export_dialog(self) -> None:
        from napari.qt.threading import create_worker

        name = self.selected_name()
        default = f"{name.split(' (')[0].replace(' ', '_')}.zip"
        path, _ = QFileDialog.getSaveFileName(self, "Export for bioimage.io", default,
                                              "bioimage.io model package (*.zip)")
        if path:
            self.export_button.setEnabled(False)
            worker = create_worker(self.export, path, name)  # seconds: not in the GUI thread
            worker.finished.connect(lambda: self.export_button.setEnabled(True))
            worker.start()

    def export(self, path: str | Path, name: str | None = None) -> Path | None:
        """Export version ``name`` (default: the chosen one) as a bioimage.io package."""
        from ..bioimageio.export import export_bioimageio

        version = self.session.get(name or self.selected_name())
        try:
            out = export_bioimageio(version.get_model(), path, overwrite=True)
        except (OSError, ValueError) as err:
            show_error(f"Export: {err}")
            return None
        show_info(f"Exported {version.name} to {out} (bioimage.io package)")
        return Path(out)
