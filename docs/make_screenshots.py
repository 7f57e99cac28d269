"""`make screenshots`: run the human-in-the-loop cycle on the sample and photograph it.

Opens a real napari window (on a private Xvfb display when $DISPLAY is unset), loads the
nuclei sample, segments the current slice, shows the border weights, fine-tunes briefly on
two marked slices and writes, into docs/images/:

* ``segment.png``  – the Segment dock with the predicted labels,
* ``weights.png``  – the Border weights dock with the ``w`` map,
* ``finetune.png`` – the Fine-tune dock after training (loss curve, new version),
* ``window.png``   – the whole window with all three docks.

    .venv/bin/python docs/make_screenshots.py [--steps N] [--out DIR]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("QT_API", "pyqt6")

HERE = Path(__file__).resolve().parent
WINDOW = (1600, 1000)


def settle(seconds: float = 0.5) -> None:
    """Let Qt lay out and paint for a moment."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def wait_for(widget, attr: str = "worker", timeout: float = 600.0) -> None:
    """Process Qt events until ``widget.<attr>`` is None (its job has ended)."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    deadline = time.monotonic() + timeout
    while getattr(widget, attr) is not None:
        if time.monotonic() > deadline:
            raise TimeoutError(f"{type(widget).__name__}.{attr} did not finish")
        app.processEvents()
        time.sleep(0.02)


def only(viewer, visible: list[str]) -> None:
    """Show exactly the named layers (others hidden)."""
    for layer in viewer.layers:
        layer.visible = layer.name in visible


def shoot(viewer, docks: dict, show: list[str], path: Path) -> None:
    """Save the window with only the docks in ``show`` visible."""
    from qtpy.QtCore import Qt

    for name, dock in docks.items():
        dock.setVisible(name in show)
    if len(show) == 1:  # one dock: keep it narrow, give the canvas the room
        qt_window = viewer.window._qt_window
        qt_window.resizeDocks([docks[show[0]]], [440], Qt.Orientation.Horizontal)
    settle(0.5)
    viewer.reset_view()
    settle(0.7)
    viewer.window._qt_window.grab().save(str(path))
    print(f"saved {path}")


def run(out: Path, steps: int) -> None:
    import napari
    from qtpy.QtCore import Qt

    out.mkdir(parents=True, exist_ok=True)
    viewer = napari.Viewer(title="napari-unet", show=True)
    try:
        viewer.open_sample("napari-unet", "nuclei")
        docks, w = {}, {}
        for name in ("Segment", "Border weights", "Fine-tune"):
            docks[name], w[name] = viewer.window.add_plugin_dock_widget("napari-unet", name)
        qt_window = viewer.window._qt_window
        qt_window.splitDockWidget(docks["Segment"], docks["Fine-tune"], Qt.Orientation.Horizontal)
        qt_window.splitDockWidget(docks["Segment"], docks["Border weights"],
                                  Qt.Orientation.Vertical)
        qt_window.resize(*WINDOW)
        viewer.dims.set_current_step(0, 1)
        settle()

        # 1. Segment the current slice (probability and uncertainty layers too)
        seg = w["Segment"]
        seg.image_combo.set_layer("nuclei")
        seg.prob_check.setChecked(True)
        seg.run()
        wait_for(seg)
        only(viewer, ["nuclei", "nuclei labels"])
        viewer.layers.selection.active = viewer.layers["nuclei labels"]
        shoot(viewer, docks, ["Segment"], out / "segment.png")

        # 2. Border weights of the ground-truth labels
        weights = w["Border weights"]
        weights.labels_combo.set_layer("nuclei ground truth")
        weights.compute()
        wait_for(weights)
        only(viewer, ["w"])
        viewer.layers.selection.active = viewer.layers["w"]
        shoot(viewer, docks, ["Border weights"], out / "weights.png")

        # 3. Fine-tune on two slices marked as corrected (ground truth stands in for them)
        ft = w["Fine-tune"]
        ft.image_combo.set_layer("nuclei")
        ft.labels_combo.set_layer("nuclei ground truth")
        for z in (0, 2):
            viewer.dims.set_current_step(0, z)
            ft.correction.toggle_mark()
        viewer.dims.set_current_step(0, 1)
        ft.steps_spin.setValue(steps)
        ft.tile_spin.setValue(128)
        ft.start()
        wait_for(ft)
        wait_for(ft, "predict_worker")
        only(viewer, ["nuclei", "nuclei labels"])
        shoot(viewer, docks, ["Fine-tune"], out / "finetune.png")

        # 4. Everything
        only(viewer, ["nuclei", "nuclei labels"])
        shoot(viewer, docks, list(docks), out / "window.png")
    finally:
        viewer.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(HERE / "images"), help="output folder")
    parser.add_argument("--steps", type=int, default=30, help="fine-tuning steps")
    args = parser.parse_args(argv)

    from napari_unet._display import virtual_display

    with (virtual_display(f"{WINDOW[0]}x{WINDOW[1]}x24"),
          tempfile.TemporaryDirectory(prefix="napari-unet-shots-") as tmp):
        os.environ.setdefault("NAPARI_UNET_AUTOSAVE_DIR", tmp)
        run(Path(args.out), args.steps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
