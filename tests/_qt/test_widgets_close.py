"""Closing napari while workers run never crashes the process (issue 18, item 9)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("napari")

SCRIPT = textwrap.dedent('''
    import numpy as np
    import napari
    import torch
    from qtpy.QtCore import QTimer
    from qtpy.QtWidgets import QApplication

    from napari_unet._qt.session import get_session
    from napari_unet.model import UNet

    torch.manual_seed(0)
    session = get_session()
    session.add_model(UNet(base_channels=4, depth=3), kind="new", name="tiny")
    viewer = napari.Viewer(show=True)
    viewer.open_sample("napari-unet", "nuclei")
    _, seg = viewer.window.add_plugin_dock_widget("napari-unet", "Segment")
    _, ft = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    _, bw = viewer.window.add_plugin_dock_widget("napari-unet", "Border weights")
    gt = viewer.layers["nuclei ground truth"]
    ft.image_combo.set_layer("nuclei")
    ft.labels_combo.set_layer(gt)
    bw.labels_combo.set_layer(gt)
    ft.device_combo.setCurrentText("cpu")
    seg.device_combo.setCurrentText("cpu")
    ft.steps_spin.setValue(100000)
    ft.tile_spin.setValue(64)
    session.set_corrected(gt, [0, 1])
    seg.scope_combo.setCurrentText("whole stack")
    state = {"closed": False}

    def close(*_):
        if state["closed"]:
            return
        state["closed"] = True
        ys, xs = np.mgrid[5:25, 5:25]
        gt.data_setitem((np.full(ys.size, 2), ys.ravel(), xs.ravel()), 7)  # a stroke
        ft.correction.autosaver.save_now()  # an autosave write under way
        bw.compute()  # a weights job under way
        seg.run()  # a segmentation under way
        viewer.dims.set_current_step(0, 3)  # a slice change
        viewer.close()
        QTimer.singleShot(0, QApplication.instance().quit)

    worker = ft.start()
    worker.yielded.connect(close)
    napari.run()
    print("EXITED CLEANLY")
''')


def test_closing_napari_during_jobs_never_crashes(tmp_path):
    env = dict(os.environ, NAPARI_UNET_AUTOSAVE_DIR=str(tmp_path), QT_API="pyqt6")
    proc = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "EXITED CLEANLY" in proc.stdout
    assert "has been deleted" not in proc.stderr
