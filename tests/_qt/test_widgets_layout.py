"""The docks fit a 1920x1080 screen, and a wrapping status line never hides a button."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from qtpy.QtWidgets import QApplication, QPushButton  # noqa: E402

from napari_unet._qt.layout import MIN_DOCK_HEIGHT  # noqa: E402

DOCKS = ("Segment", "Fine-tune", "Border weights")
LONG = ("a status line long enough to wrap over many lines in a narrow dock, " * 12).strip()


def _three_docks(viewer):
    viewer.add_image(np.zeros((4, 64, 64), np.uint16), name="img")
    return {name: viewer.window.add_plugin_dock_widget("napari-unet", name) for name in DOCKS}


def test_three_docks_fit_a_1080_pixel_screen(make_napari_viewer):
    viewer = make_napari_viewer()
    docks = _three_docks(viewer)
    QApplication.processEvents()
    for dock, widget in docks.values():
        # each dock's controls scroll; its minimum is a few rows, not all its controls
        assert dock.minimumSizeHint().height() <= MIN_DOCK_HEIGHT + 60
        assert widget.scroll_area.widget().minimumSizeHint().height() > MIN_DOCK_HEIGHT
    # the window (napari's own docks included) can be made smaller than the screen
    window = viewer.window._qt_window  # noqa: SLF001
    assert window.minimumSizeHint().height() <= 1000
    assert sum(d.minimumSizeHint().height() for d, _ in docks.values()) <= 1000


@pytest.mark.parametrize("name", DOCKS)
def test_a_wrapped_status_line_pushes_the_buttons_down(make_napari_viewer, name):
    viewer = make_napari_viewer(show=True)  # laid out as on a screen
    dock, widget = _three_docks(viewer)[name]
    widget.status.setText(LONG)
    for _ in range(3):  # the dock lays out the new text
        QApplication.processEvents()
    status = widget.status
    assert status.height() >= status.heightForWidth(status.width()) > 3 * status.fontMetrics().height()
    body = widget.scroll_area.widget()
    buttons = [b for b in body.findChildren(QPushButton) if b.isVisibleTo(body)]
    assert buttons
    top = status.mapTo(body, status.rect().topLeft()).y()
    bottom = top + status.height()
    for button in buttons:
        y0 = button.mapTo(body, button.rect().topLeft()).y()
        assert button.height() >= button.minimumSizeHint().height()  # not squeezed
        assert y0 + button.height() <= top or y0 >= bottom  # not under the status text
        assert y0 + button.height() <= body.height()  # inside the (scrolled) body
