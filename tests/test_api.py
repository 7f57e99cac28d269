"""The public Python API: what the package root exports, a light import, the README example."""

import os
import re
import subprocess
import sys
from pathlib import Path

import napari_unet as nu

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = ["UNet", "UNetConfig", "load_model", "save_model", "predict", "predict_iter",
            "fine_tune", "TrainConfig", "border_weight_map", "border_distances",
            "separation_borders", "elastic_deform", "labels_from_probabilities",
            "finetune_round", "RoundConfig"]


def test_public_names_resolve():
    for name in REQUIRED:
        assert name in nu.__all__ and callable(getattr(nu, name)), name
    assert set(nu.__all__) <= set(dir(nu))


def test_import_loads_neither_napari_nor_qt():
    code = ("import sys, napari_unet as nu; nu.UNet; nu.predict; nu.load_model; nu.finetune_round; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('napari', 'qtpy', 'PyQt6', "
            "'PyQt5', 'PySide6', 'magicgui')]; print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout + r.stderr


def test_predict_is_the_function_even_after_its_module_is_imported(tiny_net):
    import numpy as np

    import napari_unet.inference.predict as module

    assert nu.predict is module.predict and callable(nu.predict)
    assert nu.predict(tiny_net, np.zeros((40, 40), np.float32)).shape == (2, 40, 40)


def test_readme_example_runs(tmp_path, monkeypatch):
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Scripting"):]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    assert 8 <= len(code.strip().splitlines()) <= 14
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAPARI_UNET_AUTOSAVE_DIR", str(tmp_path))
    exec(compile(code, "README.md", "exec"), {"__name__": "readme"})
    assert nu.load_model(tmp_path / "nuclei-ft.pt").record["parent"] == "nuclei-fluorescence"
    assert os.path.getsize(tmp_path / "nuclei-ft.pt") > 0


def test_api_doc_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "docs" / "api.md").read_text(), re.S)
    assert len(blocks) >= 11
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("NAPARI_UNET_AUTOSAVE_DIR", str(tmp_path))
    namespace = {"__name__": "api_doc"}
    for i, code in enumerate(blocks):
        exec(compile(code, f"docs/api.md block {i}", "exec"), namespace)
    documented = set(re.findall(r"^### (.+)$", (ROOT / "docs" / "api.md").read_text(), re.M))
    names = {n.strip("` ") for line in documented for n in line.split(",")}
    assert set(REQUIRED) <= names
