"""`make demo`: napari with the nuclei sample and the three napari-unet docks.

With a display ($DISPLAY set) it opens napari and stays open. Without one it starts a
private Xvfb server, segments the current slice, saves the whole window (docks included)
to ``demo-screenshot.png`` at the repository root, and exits by itself.

    .venv/bin/python scripts/demo.py [--headless] [--no-segment] [--screenshot PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("QT_API", "pyqt6")

ROOT = Path(__file__).resolve().parents[1]
WINDOW = (1600, 1000)


def build_viewer(show: bool = True):
    """Napari with the sample data and the docks: (viewer, {name: widget})."""
    import napari
    from qtpy.QtCore import Qt

    viewer = napari.Viewer(title="napari-unet demo", show=show)
    viewer.open_sample("napari-unet", "nuclei")
    docks, widgets = {}, {}
    for name in ("Segment", "Border weights", "Fine-tune"):
        dock, widget = viewer.window.add_plugin_dock_widget("napari-unet", name)
        docks[name], widgets[name] = dock, widget
    qt_window = viewer.window._qt_window
    # Segment above Border weights in one column, Fine-tune in a second column.
    qt_window.splitDockWidget(docks["Segment"], docks["Fine-tune"], Qt.Orientation.Horizontal)
    qt_window.splitDockWidget(docks["Segment"], docks["Border weights"], Qt.Orientation.Vertical)
    qt_window.resize(*WINDOW)
    qt_window.resizeDocks([docks["Segment"], docks["Fine-tune"]], [360, 380],
                          Qt.Orientation.Horizontal)
    viewer.layers.selection.active = viewer.layers["nuclei"]
    return viewer, widgets


def wait_for(widget, attr: str = "worker", timeout: float = 300.0) -> bool:
    """Process Qt events until ``widget.<attr>`` is None (its job ended); False on timeout."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    deadline = time.monotonic() + timeout
    while getattr(widget, attr) is not None:
        if time.monotonic() > deadline:
            return False
        app.processEvents()
        time.sleep(0.02)
    return True


def settle(seconds: float = 1.0) -> None:
    """Let Qt lay out and paint for a moment."""
    from qtpy.QtWidgets import QApplication

    app = QApplication.instance()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        app.processEvents()
        time.sleep(0.02)


def headless(args: argparse.Namespace) -> int:
    import tempfile

    from napari_unet._display import virtual_display

    with (virtual_display(f"{WINDOW[0]}x{WINDOW[1]}x24", force=args.headless),
          tempfile.TemporaryDirectory(prefix="napari-unet-demo-") as tmp):
        # this unattended run keeps its autosaves out of ~/.napari-unet
        os.environ.setdefault("NAPARI_UNET_AUTOSAVE_DIR", tmp)
        viewer, widgets = build_viewer(show=True)
        try:
            settle(1.0)
            if not args.no_segment:
                seg = widgets["Segment"]
                seg.run()
                if not wait_for(seg):
                    print("segmentation did not finish in time", file=sys.stderr)
                weights = widgets["Border weights"]
                weights.labels_combo.set_layer("nuclei ground truth")
                weights.compute()
                wait_for(weights)
                for name in ("d1", "d2", "w"):
                    if name in viewer.layers:
                        viewer.layers[name].visible = False
                if "nuclei labels" in viewer.layers:
                    viewer.layers.selection.active = viewer.layers["nuclei labels"]
            settle(0.5)
            viewer.reset_view()
            settle(1.0)
            out = Path(args.screenshot)
            viewer.window._qt_window.grab().save(str(out))
            print(f"saved {out}")
        finally:
            viewer.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--headless", action="store_true",
                        help="use a private Xvfb display, screenshot and exit")
    parser.add_argument("--no-segment", action="store_true", help="do not run Segment")
    parser.add_argument("--screenshot", default=str(ROOT / "demo-screenshot.png"))
    args = parser.parse_args(argv)
    if args.headless or not os.environ.get("DISPLAY"):
        return headless(args)
    import napari

    build_viewer(show=True)
    napari.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
