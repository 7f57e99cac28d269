"""bioimage.io export and import: the peer's own test suite (``bioimageio test``), offline."""

import ast
import os
import socket
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import napari_unet as nu
from napari_unet.model import UNet

pytest.importorskip("bioimageio.core", reason="needs the [bioimageio] extra: "
                    'pip install "napari-unet[bioimageio]"')

ARCH = Path(nu.__file__).parent / "bioimageio" / "arch.py"


@pytest.fixture
def offline(monkeypatch):
    """No network: any connection attempt fails (as on a machine without one)."""
    def refuse(*args, **kwargs):
        raise OSError("network disabled in this test")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def _bioimageio_test(path: Path) -> None:
    from bioimageio.core import test_model

    summary = test_model(path)
    failed = [(d.name, [e.msg[:300] for e in d.errors]) for d in summary.details
              if d.status == "failed"]
    assert summary.status == "passed", failed


def _tiny_finetuned(blobs) -> UNet:
    """A tiny network after one short round: a fine-tuned version with its lineage."""
    from napari_unet.inference.predict import run
    from napari_unet.training.loop import RoundConfig, finetune_round

    torch.manual_seed(0)
    parent = UNet(base_channels=4, depth=3)
    parent.record.update(name="tiny-parent", description="a tiny test network")
    image, labels = blobs
    cfg = RoundConfig(holdout=0.25)
    cfg.train.steps, cfg.train.tile, cfg.train.device = 3, 64, "cpu"
    result = run(finetune_round(parent, image, labels, cfg, name="tiny fine-tuned 1 (12:00)"))
    return result.model


def test_architecture_file_is_self_contained(tiny_net):
    tree = ast.parse(ARCH.read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import)
                for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree)
                 if isinstance(n, ast.ImportFrom) and n.module}
    assert imported <= {"torch", "__future__"}, imported
    from napari_unet.bioimageio.export import build_network

    net = build_network(tiny_net)
    x = torch.rand(1, 1, 60, 52)
    with torch.no_grad():
        assert net(x).shape == (1, 2, 60, 52)
        assert torch.jit.script(net)(x).allclose(net(x))
        # inside the mirrored band the wrapper is the plain network
        valid = tiny_net.valid_input_size(100)
        y = torch.rand(1, 1, valid, valid)
        h, inner = tiny_net.halo, tiny_net(y)
        assert net(y)[..., h:h + inner.shape[-2], h:h + inner.shape[-1]].allclose(inner, atol=1e-6)


def test_builtin_model_passes_bioimageio_test_offline(tmp_path, offline):
    from napari_unet.bioimageio.export import export_bioimageio

    out = export_bioimageio("nuclei-fluorescence", tmp_path / "nuclei.zip", authors=["Tester"])
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        rdf = yaml.safe_load(z.read("rdf.yaml"))
        readme = z.read("README.md").decode()
    assert {"weights.pt", "weights.torchscript.pt", "napari_unet_arch.py", "test_input.npy",
            "test_output.npy", "sample_input.tif", "README.md"} <= names
    assert rdf["cite"][0]["doi"] == "10.1007/978-3-319-24574-4_28"
    assert rdf["weights"]["torchscript"]["parent"] == "pytorch_state_dict"
    pre = rdf["inputs"][0]["preprocessing"]
    assert any(p["id"] == "scale_range" and p["kwargs"]["max_percentile"] == 99.8 for p in pre)
    assert rdf["outputs"][0]["postprocessing"][0]["id"] == "softmax"
    assert rdf["outputs"][0]["axes"][-1]["halo"] == nu.load_model("nuclei-fluorescence").halo
    assert rdf["config"]["napari_unet"]["postprocess"]["threshold"] == 0.7
    assert "## Validation" in readme
    _bioimageio_test(out)


@pytest.mark.skipif(not os.environ.get("NAPARI_UNET_SLOW"),
                    reason="the EM model's bioimageio test takes ~30 s; NAPARI_UNET_SLOW=1")
def test_em_model_passes_bioimageio_test_offline(tmp_path, offline):
    from napari_unet.bioimageio.export import export_bioimageio

    _bioimageio_test(export_bioimageio("em-membranes", tmp_path / "em.zip"))


def test_finetuned_version_round_trip_and_bioimageio_test(tmp_path, blobs, offline):
    from napari_unet.cli import main

    model = _tiny_finetuned(blobs)
    model.config.normalization["invert"] = True  # the polarity step is exported too
    model.config.input_scale = 0.8  # and the input scale
    nu.save_model(model, tmp_path / "ft.pt")
    assert main(["export", str(tmp_path / "ft.pt"), "-o", str(tmp_path / "ft.zip"),
                 "--author", "Tester", "--sample", _write_tif(tmp_path, blobs[0])]) == 0
    out = tmp_path / "ft.zip"
    _bioimageio_test(out)
    back = nu.load_model(out)
    assert isinstance(back, UNet) and back.config.input_scale == 0.8
    assert back.record["parent"] == "tiny-parent" and back.record["history"]
    image = blobs[0]
    original = nu.predict(nu.load_model(tmp_path / "ft.pt"), image, device="cpu", tta=False)
    again = nu.predict(back, image, device="cpu", tta=False)
    assert np.abs(original - again).max() <= 1e-5
    # and it can be fine-tuned again
    from napari_unet.inference.predict import run
    from napari_unet.training.train import TrainConfig, fine_tune

    run(fine_tune(back, image, blobs[1], TrainConfig(steps=1, tile=64, device="cpu")))


def _write_tif(folder: Path, image: np.ndarray) -> str:
    import tifffile

    tifffile.imwrite(folder / "sample.tif", image)
    return str(folder / "sample.tif")


def _foreign_copy(src: Path, dst: Path) -> Path:
    """The same package without napari-unet's config: a model from elsewhere."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            if item.filename == "rdf.yaml":
                rdf = yaml.safe_load(data)
                rdf["config"].pop("napari_unet")
                rdf["name"] = "someone elses model"
                data = yaml.safe_dump(rdf).encode()
            zout.writestr(item, data)
    return dst


def test_foreign_package_predicts_but_cannot_be_fine_tuned(tmp_path, tiny_net, blobs, offline):
    from napari_unet.bioimageio.export import export_bioimageio
    from napari_unet.bioimageio.runtime import NotFineTunableError
    from napari_unet.inference.predict import run
    from napari_unet.training.loop import finetune_round

    tiny_net.config.normalization = {"mode": "percentile", "low": 1.0, "high": 99.8}
    ours = export_bioimageio(tiny_net, tmp_path / "ours.zip")
    foreign = nu.load_model(_foreign_copy(ours, tmp_path / "foreign.zip"))
    assert not isinstance(foreign, UNet) and foreign.in_channels == 1
    image = blobs[0]
    p = nu.predict(foreign, image, device="cpu")
    expected = nu.predict(tiny_net, image, device="cpu")
    assert p.shape == expected.shape == (2, *image.shape)
    h = tiny_net.halo
    assert np.abs(p - expected)[:, h:-h, h:-h].mean() < 0.02
    with pytest.raises(NotFineTunableError, match="cannot be fine-tuned"):
        run(finetune_round(foreign, image, blobs[1]))
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(foreign.path) as zin, zipfile.ZipFile(bad, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, data.replace(b"someone elses", b"someone's") if
                          item.filename == "rdf.yaml" else data)
    with pytest.raises(ValueError, match="not a valid bioimage.io model .*name") as err:
        nu.load_model(bad)
    assert "\n" not in str(err.value)


def test_bad_packages_one_line_errors(tmp_path, tiny_net):
    from napari_unet.bioimageio.export import export_bioimageio

    junk = tmp_path / "junk.zip"
    with zipfile.ZipFile(junk, "w") as z:
        z.writestr("rdf.yaml", ": : not yaml [")
    with pytest.raises(ValueError, match="cannot read .* as a bioimage.io package") as err:
        nu.load_model(junk)
    assert "\n" not in str(err.value)
    tiny_net.config.normalization = {"mode": "minmax"}
    good = export_bioimageio(tiny_net, tmp_path / "good.zip")
    damaged = tmp_path / "damaged.zip"
    with zipfile.ZipFile(good) as zin, zipfile.ZipFile(damaged, "w") as zout:
        for item in zin.infolist():
            data = zin.read(item)
            zout.writestr(item, data[:-10] + b"0" * 10 if item.filename == "weights.pt" else data)
    with pytest.raises(ValueError, match="sha256"):
        nu.load_model(damaged)
    before = good.read_bytes()
    with pytest.raises(ValueError, match="exists"):
        export_bioimageio(tiny_net, good)
    with pytest.raises(ValueError, match=r"\.zip"):
        export_bioimageio(tiny_net, tmp_path / "model.pt")
    assert good.read_bytes() == before


def test_missing_extra_is_one_clear_line(monkeypatch, tmp_path, tiny_net):
    import sys

    from napari_unet.bioimageio.export import MissingExtraError, export_bioimageio

    monkeypatch.setitem(sys.modules, "bioimageio.core", None)
    with pytest.raises(MissingExtraError, match=r"napari-unet\[bioimageio\]"):
        export_bioimageio(tiny_net, tmp_path / "x.zip")
    assert not (tmp_path / "x.zip").exists()


def test_versions_panel_exports(qtbot, tiny_session, tmp_path):
    from napari_unet._qt.versions import VersionsPanel

    panel = VersionsPanel()
    qtbot.addWidget(panel)
    out = panel.export(tmp_path / "tiny.zip", "tiny")
    assert out is not None and zipfile.is_zipfile(out)
    assert isinstance(nu.load_model(out), UNet)
