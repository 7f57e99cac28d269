"""Fine-tune dock: several (image, labels) layer pairs in one round."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("napari")

from tests.conftest import force_self_check, wait_finished  # noqa: E402

pytestmark = pytest.mark.usefixtures("tiny_session")


def _dock(viewer, blobs):
    viewer.open_sample("napari-unet", "nuclei")
    img, lab = blobs
    viewer.add_image(img, name="blobs")
    viewer.add_labels(lab, name="blobs labels")
    _, widget = viewer.window.add_plugin_dock_widget("napari-unet", "Fine-tune")
    widget.steps_spin.setValue(2)
    widget.tile_spin.setValue(64)
    widget.device_combo.setCurrentText("cpu")
    widget.predict_after_check.setChecked(False)
    return widget


def _choose(widget, image, labels):
    widget.image_combo.set_layer(image)
    widget.labels_combo.set_layer(labels)


def test_a_round_trains_on_two_pairs(make_napari_viewer, qtbot, tiny_session, blobs,
                                     monkeypatch):
    viewer = make_napari_viewer()
    widget = _dock(viewer, blobs)
    tiny_session.set_corrected(viewer.layers["blobs labels"], [0])
    _choose(widget, "blobs", "blobs labels")
    widget.pairs.add_button.click()
    assert widget.pairs.list.item(0).text() == "blobs + blobs labels: 1 corrected"
    _choose(widget, "nuclei", "nuclei ground truth")
    tiny_session.set_corrected(viewer.layers["nuclei ground truth"], [0, 2])
    assert widget.slice_list.checked() == [0, 2]
    force_self_check(monkeypatch, True)
    worker = widget.start()
    assert worker is not None
    assert widget.status.text().startswith("fine-tuning tiny on 3 slice(s) of 2 images")
    viewer.layers["blobs labels"].data = np.zeros((96, 96), np.uint16)  # painting goes on
    with qtbot.waitSignals([worker.returned, worker.finished], timeout=180_000):
        pass
    new = tiny_session.current
    assert new.parent == "tiny"
    record = new.get_model().record
    assert record["data"] == "3 corrected slice(s) of 2 images: nuclei[0], nuclei[2], blobs"
    assert record["self_check"]["n_slices"] == 3 and record["self_check"]["held_back"]
    assert "trained on 3 slice(s) of 2 images" in widget.status.text()
    # a deleted layer takes its pair off the list
    viewer.layers.remove("blobs labels")
    assert widget.pairs.pairs() == [] and widget.pairs.list.count() == 0


def test_a_pair_whose_labels_do_not_fit_its_image_starts_nothing(make_napari_viewer, qtbot,
                                                                  tiny_session, blobs):
    viewer = make_napari_viewer()
    widget = _dock(viewer, blobs)
    wrong = viewer.add_labels(np.ones((50, 60), np.uint16), name="wrong")
    tiny_session.set_corrected(wrong, [0])
    _choose(widget, "blobs", "wrong")
    widget.pairs.add_current()
    _choose(widget, "nuclei", "nuclei ground truth")
    tiny_session.set_corrected(viewer.layers["nuclei ground truth"], [1])
    n_versions = len(tiny_session.versions())
    assert widget.start() is None and widget.worker is None
    text = widget.status.text()
    assert text == ("not started: 'wrong': labels shape (50, 60) differs from 'blobs''s "
                    "spatial shape (96, 96)")
    assert "\n" not in text and len(tiny_session.versions()) == n_versions
    assert widget.start_button.isEnabled()
    # a listed pair without marks is refused the same way
    tiny_session.set_corrected(wrong, [])
    widget.pairs.clear_pairs()
    _choose(widget, "blobs", "blobs labels")
    widget.pairs.add_current()
    _choose(widget, "nuclei", "nuclei ground truth")
    assert widget.start() is None
    assert "'blobs labels' has no slice marked as corrected" in widget.status.text()
    # the dock's own pair in the list is trained on once, with its ticked slices
    widget.pairs.clear_pairs()
    widget.pairs.add_current()
    worker = widget.start()
    assert widget.status.text().startswith("fine-tuning tiny on slices [1]")
    wait_finished(qtbot, worker)

