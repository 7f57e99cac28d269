"""The npe2 manifest validates and its sample data opens in a viewer."""

from __future__ import annotations

from importlib import resources

import numpy as np
import pytest

npe2 = pytest.importorskip("npe2")


def _manifest_path():
    return resources.files("napari_unet") / "napari.yaml"


def test_manifest_validates():
    from npe2 import PluginManifest

    mf = PluginManifest.from_file(str(_manifest_path()))
    assert mf.name == "napari-unet"
    mf.validate_imports()  # every python_name imports
    contrib = mf.contributions
    assert all(c.id.startswith("napari-unet.") for c in contrib.commands)
    widgets = [w.display_name for w in contrib.widgets]
    for part in ("Segment", "Border weights", "Fine-tune"):
        assert any(part in name for name in widgets), (part, widgets)
    (sample,) = contrib.sample_data
    assert sample.key == "nuclei" and sample.display_name == "Nuclei (DSB2018)"
    assert sample.command == "napari-unet.sample_nuclei"
    menu = contrib.menus["napari/layers/segment"]
    assert {m.command for m in menu} == {w.command for w in contrib.widgets}


def test_manifest_is_discovered_by_entry_point():
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    mf = pm.get_manifest("napari-unet")
    assert mf.name == "napari-unet"


def test_sample_data_function():
    from napari_unet._sample_data import nuclei_sample

    (img, img_meta, img_type), (lab, lab_meta, lab_type) = nuclei_sample()
    assert (img_type, lab_type) == ("image", "labels")
    assert img.shape == lab.shape == (4, 256, 256)
    assert img.dtype == np.uint8 and lab.dtype == np.uint16
    assert all(lab[z].max() > 0 for z in range(4))
    data_dir = resources.files("napari_unet") / "data"
    size = sum(f.stat().st_size for f in data_dir.iterdir() if f.name.endswith(".tif"))
    assert size < 2 * 2**20


def test_open_sample_in_viewer(make_napari_viewer):
    viewer = make_napari_viewer()
    viewer.open_sample("napari-unet", "nuclei")
    kinds = sorted(type(layer).__name__ for layer in viewer.layers)
    assert kinds == ["Image", "Labels"]
    assert viewer.layers["nuclei"].data.shape == (4, 256, 256)
