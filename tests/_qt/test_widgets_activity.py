"""napari conventions: jobs in the activity dock (with Cancel), a themed, smoothed loss plot."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari.utils.progress import progress  # noqa: E402

from napari_unet._qt.plot import LossPlot, smooth  # noqa: E402
from tests.conftest import wait_finished  # noqa: E402

pytestmark = pytest.mark.usefixtures("tiny_session")


def _segment_dock(viewer):
    viewer.open_sample("napari-unet", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    widget.image_combo.set_layer("nuclei")
    widget.device_combo.setCurrentText("cpu")
    widget.scope_combo.setCurrentText("whole stack")
    return widget


def test_segment_shows_in_the_activity_dock_and_leaves_it(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_dock(viewer)
    worker = widget.run()
    bar = worker.activity
    assert bar.bar in progress._all_instances  # noqa: SLF001 - what the activity dock lists
    assert bar.bar.desc.startswith("Segment")
    wait_finished(qtbot, worker)
    assert bar.closed and bar.bar not in progress._all_instances  # noqa: SLF001
    assert bar.bar.total > 0  # it showed the tiles, not only a busy bar
    assert "nuclei labels" in viewer.layers


def test_cancel_in_the_activity_dock_stops_the_job(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    widget = _segment_dock(viewer)
    worker = widget.run()
    with qtbot.waitSignal(worker.finished, timeout=180_000):
        worker.activity.bar.cancel()  # what the activity dock's Cancel button calls
    assert worker.abort_requested and worker.activity.canceled
    assert widget.status.text() == "cancelled" and widget.run_button.isEnabled()
    assert "nuclei labels" not in viewer.layers  # nothing was written


def test_loss_plot_follows_the_theme_and_smooths(qtbot):
    from napari.utils.theme import get_theme

    plot = LossPlot()
    qtbot.addWidget(plot)
    for name in ("dark", "light"):
        plot.set_theme(name)
        text = get_theme(name).text.as_hex()
        assert plot.axes.xaxis.label.get_color() == text
        assert plot.smooth_line.get_color() == get_theme(name).current.as_hex()
    losses = [1.0, 0.2, 0.9, 0.1, 0.8, 0.1]
    for step, loss in enumerate(losses, 1):
        plot.add(step, loss)
    plot.redraw()
    smoothed = np.asarray(plot.smooth_line.get_ydata())
    np.testing.assert_allclose(smoothed, smooth(losses))
    assert np.ptp(smoothed) < np.ptp(losses)  # smoother than the raw curve
    assert smoothed[0] == pytest.approx(1.0)  # debiased: starts at the first loss
