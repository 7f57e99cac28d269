"""Issue 17, items 7-9: hostile or broken model files give one clear line naming the file."""

import collections
import io
import pickle
import zipfile

import numpy as np
import pytest
import tifffile
import torch

from napari_unet.cli import main
from napari_unet.model import MAX_PARAMETERS, UNet, UNetConfig, parameter_count
from napari_unet.model_files import load_model, model_to_dict, save_model


# --- model files (items 7-9) ---------------------------------------------------------------
def _model_dict(tiny_net, **changes):
    d = model_to_dict(tiny_net)
    for key, value in changes.items():
        if key.startswith("config."):
            d["config"][key[7:]] = value
        elif key.startswith("state."):
            name = key[6:]
            if value is None:
                del d["state_dict"][name]
            else:
                d["state_dict"][name] = value
        else:
            d[key] = value
    return d


BAD_MODELS = {
    "depth 40": (dict(**{"config.depth": 40}), "depth must be in"),
    "base 1e6": (dict(**{"config.base_channels": 1e6}), "must be an integer"),
    "base 10**6": (dict(**{"config.base_channels": 10**6}), "base_channels must be in"),
    "huge net": (dict(**{"config.base_channels": 512, "config.depth": 8}), "too large"),
    "in 0": (dict(**{"config.in_channels": 0}), "in_channels must be in"),
    "classes 10**5": (dict(**{"config.n_classes": 10**5}), "n_classes must be in"),
    "dropout nan": (dict(**{"config.dropout": float("nan")}), "dropout"),
    "config list": (dict(config=[1, 2]), "config must be a dict"),
    "config tensor": (dict(config=torch.zeros(3)), "config must be a dict"),
    "config string": (dict(config="depth=5"), "config must be a dict"),
    "no config": (dict(config=None), "config must be a dict"),
    "missing key": (dict(**{"state.head.bias": None}), "missing 1 weights"),
    "extra key": (dict(**{"state.evil": torch.zeros(1)}), "unexpected"),
    "wrong shape": (dict(**{"state.head.bias": torch.zeros(5)}), "has shape"),
    "not a tensor": (dict(**{"state.head.bias": [0.0, 0.0]}), "not a tensor"),
    "nan weight": (dict(**{"state.head.bias": torch.tensor([float("nan"), 0.0])}), "finite"),
    "state list": (dict(state_dict=[1]), "state_dict must be a dict"),
    "record str": (dict(record="x"), "record must be a dict"),
    "wrong format": (dict(format="other"), "not a napari-unet model"),
    "big tensors": (dict(**{"state.pad": torch.zeros(5 * 2**20)}), "more than its config"),
}


@pytest.mark.parametrize("case", list(BAD_MODELS))
def test_bad_model_files_give_one_line_naming_the_file(tmp_path, capsys, tiny_net, case):
    changes, message = BAD_MODELS[case]
    path = tmp_path / "bad.pt"
    torch.save(_model_dict(tiny_net, **changes), path)
    with pytest.raises(ValueError, match=message) as info:
        load_model(path)
    assert str(path) in str(info.value) and "\n" not in str(info.value)
    tifffile.imwrite(tmp_path / "a.tif", np.zeros((8, 8), np.uint8))
    assert main(["predict", str(tmp_path / "a.tif"), "-o", str(tmp_path / "o.tif"),
                 "--model", str(path)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and not (tmp_path / "o.tif").exists()


@pytest.mark.parametrize("obj", [[1, 2], torch.zeros(3), "a string", 5, None])
def test_a_file_not_holding_a_dict(tmp_path, obj):
    torch.save(obj, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="x.pt.*(dict|not a napari-unet)"):
        load_model(tmp_path / "x.pt")


@pytest.mark.parametrize("content", [b"", b"not a zip", b"PK\x03\x04" + b"\x00" * 50])
def test_not_a_model_file(tmp_path, content):
    (tmp_path / "x.pt").write_bytes(content)
    with pytest.raises(ValueError, match="x.pt"):
        load_model(tmp_path / "x.pt")


def test_truncated_model_file(tmp_path, tiny_net):
    data = save_model(tiny_net, tmp_path / "m.pt").read_bytes()
    (tmp_path / "t.pt").write_bytes(data[: len(data) * 2 // 3])
    with pytest.raises(ValueError, match="t.pt"):
        load_model(tmp_path / "t.pt")


class _Storage:
    pass


class _Tensor:
    def __init__(self, numel):
        self.numel = numel

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2,
                (_Storage(), 0, (self.numel,), (1,), False, collections.OrderedDict()))


def test_declared_sizes_are_refused_before_any_tensor_is_read(tmp_path, tiny_net, monkeypatch):
    """A small file declaring a 4 GB tensor is refused without calling torch.load."""
    d = model_to_dict(tiny_net)
    d["state_dict"] = {k: _Tensor(v.numel()) for k, v in d["state_dict"].items()}
    d["state_dict"]["head.bias"] = _Tensor(2**30)

    class Pickler(pickle.Pickler):
        def persistent_id(self, obj):
            if isinstance(obj, _Storage):
                return ("storage", torch.FloatStorage, "0", "cpu", 2**30)
            return None

    buf = io.BytesIO()
    Pickler(buf, protocol=2).dump(d)
    with zipfile.ZipFile(tmp_path / "bomb.pt", "w") as zf:
        zf.writestr("archive/data.pkl", buf.getvalue())
        zf.writestr("archive/data/0", b"\x00" * 16)
        zf.writestr("archive/version", "3\n")
    monkeypatch.setattr(torch, "load", lambda *a, **k: pytest.fail("torch.load was called"))
    with pytest.raises(ValueError, match="bomb.pt.*declares 4096.0 MiB"):
        load_model(tmp_path / "bomb.pt")


def test_config_bounds_and_parameter_count():
    for kw in (dict(base_channels=4, depth=3), dict(in_channels=3, n_classes=7, depth=4,
                                                    base_channels=8, padding="same")):
        net = UNet(**kw)
        c = net.config
        assert parameter_count(c.in_channels, c.n_classes, c.depth, c.base_channels) == sum(
            p.numel() for p in net.parameters())
    assert parameter_count(1, 2, 5, 64) < MAX_PARAMETERS  # the paper's network
    for bad in (dict(depth=0), dict(depth=9), dict(depth=True), dict(base_channels=2.0),
                dict(in_channels=-1), dict(class_names="ab"), dict(normalization=[1])):
        with pytest.raises(ValueError):
            UNetConfig(**bad)
    with pytest.raises(ValueError, match="must be a dict"):
        UNetConfig.from_dict([("depth", 3)])
