"""Border weights dock: the layers equal the core's maps and follow painting."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from napari_unet.training.border_weights import (  # noqa: E402
    border_distances,
    border_weight_map,
    separation_borders,
)
from napari_unet.training.weight_maps import clip_distance  # noqa: E402
from tests.conftest import wait_finished  # noqa: E402

TIMEOUT = 60_000


@pytest.fixture(autouse=True)
def _autosave_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("NAPARI_UNET_AUTOSAVE_DIR", str(tmp_path / "autosave"))


def _dock(viewer, labels_name):
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Border weights")
    widget.labels_combo.set_layer(labels_name)
    return widget


def test_weight_layers_equal_core_maps_on_current_slice(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    widget = _dock(viewer, "nuclei ground truth")
    widget.w0_spin.setValue(8.0)
    widget.sigma_spin.setValue(4.0)
    viewer.dims.set_current_step(0, 1)
    worker = widget.compute()
    with qtbot.waitSignal(worker.finished, timeout=TIMEOUT):
        pass
    lab = np.asarray(viewer.layers["nuclei ground truth"].data[1])
    expected = border_weight_map(lab, w0=8.0, sigma=4.0, class_balance=True)
    w = viewer.layers["w"].data
    assert w.shape == (4, 256, 256)
    np.testing.assert_allclose(w[1], expected, rtol=1e-6)
    assert not w[[0, 2, 3]].any()  # stacks: only the current slice is computed
    d1, d2 = border_distances(separation_borders(lab))
    np.testing.assert_allclose(viewer.layers["d1"].data[1], clip_distance(d1))
    np.testing.assert_allclose(viewer.layers["d2"].data[1], clip_distance(d2))
    assert np.isfinite(viewer.layers["d2"].data).all()
    lo, hi = viewer.layers["w"].contrast_limits
    assert lo == pytest.approx(expected.min()) and lo < hi <= expected.max() + 1e-6


def test_w_colour_scale_shows_the_border_term_on_sparse_nuclei(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    yy, xx = np.mgrid[:256, :256]
    lab = np.zeros((256, 256), np.int32)
    for i, (cy, cx) in enumerate([(60, 60), (60, 76), (180, 150), (200, 40)], 1):
        lab[(yy - cy) ** 2 + (xx - cx) ** 2 < 49] = i  # small, sparse; two nearly touch
    viewer.add_labels(lab, name="nuclei")
    widget = _dock(viewer, "nuclei")
    wait_finished(qtbot, widget.compute())
    w = viewer.layers["w"].data
    w_c = border_weight_map(lab, w0=0.0, sigma=5.0, class_balance=True)
    border = w - w_c
    lo, hi = viewer.layers["w"].contrast_limits
    interior = float(w_c[lab > 0].max())
    assert interior > 3 * border.max()  # the case of the issue: interiors far above borders
    ridge = border > 0.1 * border.max()
    assert ridge.sum() > 20
    # the border term spans the scale: its strong values are not clipped ...
    assert hi >= float(w_c[ridge].max() + np.percentile(border[ridge], 99))
    # ... and the interiors do not set the scale (they alone saturate)
    assert hi < 0.5 * interior
    shown = (w[ridge] - lo) / (hi - lo)
    assert np.mean(shown > 1.0 + 1e-4) < 0.02 and np.ptp(shown) > 0.5  # few clipped


def test_weights_follow_painting(make_napari_viewer, qtbot):
    viewer = make_napari_viewer()
    lab = np.zeros((64, 64), np.int32)
    lab[10:25, 10:25] = 1
    lab[10:25, 28:45] = 2
    layer = viewer.add_labels(lab, name="cells")
    widget = _dock(viewer, "cells")
    widget.balance_check.setChecked(False)
    with qtbot.waitSignal(widget.updated, timeout=TIMEOUT):
        widget.compute()
    np.testing.assert_allclose(viewer.layers["w"].data,
                               border_weight_map(lab, class_balance=False), rtol=1e-6)

    # paint a third object: the change is debounced, then recomputed in a worker
    ys, xs = np.mgrid[40:55, 10:30]
    with qtbot.waitSignal(widget.updated, timeout=TIMEOUT):
        layer.data_setitem((ys.ravel(), xs.ravel()), 3)
        assert widget.timer.isActive()
    np.testing.assert_allclose(viewer.layers["w"].data,
                               border_weight_map(layer.data, class_balance=False), rtol=1e-6)


def test_weights_without_labels_layer_notifies(make_napari_viewer):
    from napari.utils.notifications import notification_manager

    viewer = make_napari_viewer()
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Border weights")
    n = len(notification_manager.records)
    assert widget.compute() is None
    assert any("Labels" in r.message for r in notification_manager.records[n:])


def test_weights_never_take_the_selection_nor_add_layers_by_themselves(make_napari_viewer,
                                                                       qtbot):
    viewer = make_napari_viewer()
    viewer.add_image(np.zeros((64, 64), np.float32), name="image")
    lab = np.zeros((64, 64), np.int32)
    lab[10:25, 10:25] = 1
    layer = viewer.add_labels(lab, name="cells")
    viewer.layers.selection.active = layer
    layer.mode = "paint"
    widget = _dock(viewer, "cells")
    assert widget.auto_check.isChecked()
    # painting before the user asked for the maps adds nothing
    ys, xs = np.mgrid[40:50, 40:50]
    layer.data_setitem((ys.ravel(), xs.ravel()), 2)
    assert not widget.timer.isActive() and "w" not in viewer.layers
    with qtbot.waitSignal(widget.updated, timeout=TIMEOUT):
        widget.compute()
    names = [lay.name for lay in viewer.layers]
    assert names.index("w") < names.index("cells") and names.index("d1") < names.index("cells")
    assert viewer.layers.selection.active is layer and set(viewer.layers.selection) == {layer}
    assert viewer.layers["w"].blending == "additive" and layer.mode == "paint"
    # the next stroke updates the maps and still leaves the selection alone
    with qtbot.waitSignal(widget.updated, timeout=TIMEOUT):
        layer.data_setitem((ys.ravel(), xs.ravel() - 30), 3)
    assert viewer.layers.selection.active is layer
    np.testing.assert_allclose(viewer.layers["w"].data, border_weight_map(layer.data),
                               rtol=1e-6)


def test_weights_default_layer_is_not_a_hidden_one(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Border weights")
    assert widget.labels_combo.layer() is None
