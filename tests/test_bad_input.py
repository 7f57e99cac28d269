"""Issue 17: a careless or hostile user's inputs, outputs and model files.

Every refused case must exit with status 2 and one line naming the problem, and must leave
every file as it was.
"""

import collections
import io
import os
import pickle
import stat
import zipfile

import numpy as np
import pytest
import tifffile
import torch
import zarr

from napari_unet.cli import main
from napari_unet.files import read_array, write_array
from napari_unet.io import load_model, model_to_dict, save_model
from napari_unet.model import MAX_PARAMETERS, UNet, UNetConfig, parameter_count


@pytest.fixture
def ws(tmp_path, monkeypatch, tiny_net):
    """A folder of inputs and outputs that must survive every refused command."""
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    tifffile.imwrite("a.tif", rng.integers(0, 255, (40, 40), dtype=np.uint8))
    tifffile.imwrite("lab.tif", (rng.random((40, 40)) > 0.7).astype(np.uint16))
    tifffile.imwrite("old.tif", np.full((4, 4), 7, np.uint16))
    z = zarr.open("same.zarr", mode="w", shape=(40, 40), dtype="u1")
    z[...] = 9
    os.makedirs("precious.zarr/sub")
    with open("precious.zarr/important.txt", "w") as f:
        f.write("keep")
    os.mkdir("folder")
    os.mkfifo("fifo")
    os.symlink("a.tif", "link_to_input.tif")
    os.symlink("missing.tif", "dangling.tif")
    os.link("a.tif", "hardlink.tif")
    save_model(tiny_net, "tiny.pt")
    return tmp_path


def _snapshot(root):
    """Every path under ``root`` with its type and content (files) or link target."""
    snap = {}
    for dirpath, dirs, files in os.walk(root):
        for name in dirs + files:
            p = os.path.join(dirpath, name)
            st = os.lstat(p)
            if stat.S_ISREG(st.st_mode):
                with open(p, "rb") as f:
                    snap[p] = f.read()
            elif stat.S_ISLNK(st.st_mode):
                snap[p] = os.readlink(p)
            else:
                snap[p] = stat.S_IFMT(st.st_mode)
    return snap


P = ["predict", "--model", "tiny.pt"]
REFUSED = [
    # data loss 1-3: an existing non-zarr directory, the input itself, two outputs alike
    (P + ["a.tif", "-o", "precious.zarr"], "not a zarr store"),
    (P + ["a.tif", "-o", "precious.zarr", "--overwrite"], "not a zarr store"),
    (P + ["same.zarr", "-o", "same.zarr", "--overwrite"], "would overwrite the input"),
    (P + ["same.zarr", "-o", "same.zarr/inner.zarr"], "would overwrite the input"),
    (P + ["a.tif", "-o", "a.tif", "--overwrite"], "would overwrite the input"),
    (P + ["a.tif", "-o", "tiny.pt", "--overwrite"], "would overwrite the input"),
    (P + ["a.tif", "-o", "link_to_input.tif", "--overwrite"], "would overwrite the input"),
    (P + ["a.tif", "-o", "hardlink.tif", "--overwrite"], "would overwrite the input"),
    (P + ["a.tif", "-o", "p.tif", "--probabilities", "p.tif"], "two outputs are the same"),
    (["weights", "lab.tif", "-o", "lab.tif", "--overwrite"], "would overwrite the input"),
    (["weights", "lab.tif", "-o", "w.tif", "--d1", "w.tif"], "two outputs are the same"),
    (["train", "--images", "a.tif", "--labels", "lab.tif", "-o", "a.tif", "--overwrite"],
     "would overwrite the input"),
    (["train", "--images", "a.tif", "--labels", "lab.tif", "--model", "tiny.pt", "-o",
      "tiny.pt", "--overwrite"], "would overwrite the input"),
    # 4: not a regular file; a dangling link
    (P + ["a.tif", "-o", "/dev/null", "--overwrite"], "is a device"),
    (P + ["a.tif", "-o", "fifo", "--overwrite"], "is a FIFO"),
    (P + ["a.tif", "-o", "folder", "--overwrite"], "is an existing directory"),
    (P + ["a.tif", "-o", "old.tif/x.tif"], "lies under a file"),
    (P + ["a.tif", "-o", "dangling.tif"], "symbolic link to a missing file"),
    # 6: an existing output without --overwrite
    (P + ["a.tif", "-o", "old.tif"], "exists (use --overwrite"),
    (["weights", "lab.tif", "-o", "old.tif"], "exists (use --overwrite"),
    (["train", "--images", "a.tif", "--labels", "lab.tif", "-o", "old.tif"], "exists"),
    # inputs that are not images
    (P + ["folder", "-o", "o.tif"], "is a directory, not an image"),
    (P + ["fifo", "-o", "o.tif"], "not a regular file"),
    (P + ["precious.zarr", "-o", "o.tif"], "cannot read"),
    (P + ["nope.tif", "-o", "o.tif"], "no such file"),
]


@pytest.mark.parametrize("argv, message", [c for c in REFUSED if c[1]],
                         ids=[" ".join(c[0]) for c in REFUSED if c[1]])
def test_refused_commands_touch_nothing(ws, capsys, argv, message):
    before = _snapshot(ws)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and "\n" not in err and "Traceback" not in err
    assert _snapshot(ws) == before  # no file changed, none appeared (no temporaries)
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


def test_readonly_output_folder_is_refused_before_training(ws, capsys, monkeypatch):
    import napari_unet.outputs as outputs

    def no_write(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(outputs.tempfile, "mkstemp", no_write)
    called = []
    monkeypatch.setattr("napari_unet.cli.read_array", lambda p: called.append(p))
    assert main(["train", "--images", "a.tif", "--labels", "lab.tif", "-o", "ro/m.pt"]) == 2
    assert "cannot write in" in capsys.readouterr().err and not called


def test_overwrite_keeps_mode_and_symlinks_write_to_their_target(ws, capsys):
    assert main(P + ["a.tif", "-o", "out.tif"]) == 0
    os.chmod("out.tif", 0o600)
    os.symlink("out.tif", "link.tif")
    assert main(P + ["a.tif", "-o", "link.tif", "--overwrite", "--threshold", "0.99"]) == 0
    assert os.path.islink("link.tif") and stat.S_IMODE(os.stat("out.tif").st_mode) == 0o600
    assert main(P + ["a.tif", "-o", "new.tif"]) == 0
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(os.stat("new.tif").st_mode) == 0o666 & ~umask
    # a zarr output replaces an existing zarr store only with --overwrite
    assert main(P + ["a.tif", "-o", "out.zarr"]) == 0
    assert main(P + ["a.tif", "-o", "out.zarr"]) == 2
    assert main(P + ["a.tif", "-o", "out.zarr", "--overwrite"]) == 0
    assert zarr.open("out.zarr", mode="r").shape == (40, 40)
    assert not [n for n in os.listdir(".") if ".napari-unet-" in n]


def test_streamed_output_of_a_zarr_input(ws, capsys):
    assert main(P + ["same.zarr", "-o", "s.zarr", "--threshold", "0.5"]) == 0
    assert main(P + ["same.zarr", "-o", "s.tif", "--threshold", "0.5"]) == 0
    np.testing.assert_array_equal(np.asarray(zarr.open("s.zarr", mode="r")),
                                  tifffile.imread("s.tif"))
    assert main(P + ["same.zarr", "-o", "s.tif", "--threshold", "0.5"]) == 2
    assert (np.asarray(zarr.open("same.zarr", mode="r")) == 9).all()


def _bad_tiffs(folder):
    good = folder / "good.tif"
    tifffile.imwrite(good, np.arange(64 * 64, dtype=np.uint16).reshape(64, 64))
    data = good.read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) // 2])
    (folder / "garbage.tif").write_bytes(b"II*\x00" + os.urandom(200))
    (folder / "text.tif").write_bytes(b"hello, not an image\n")
    (folder / "empty.tif").write_bytes(b"")
    zarr.open_group(str(folder / "group.zarr"), mode="w").create_array("a", shape=(2,),
                                                                        dtype="i4")
    (folder / "file.zarr").write_bytes(b"x")
    return ["truncated.tif", "garbage.tif", "text.tif", "empty.tif", "group.zarr", "file.zarr"]


def test_unreadable_inputs_name_the_file(tmp_path, capsys, tiny_net):
    model = str(save_model(tiny_net, tmp_path / "m.pt"))
    for name in _bad_tiffs(tmp_path):
        with pytest.raises(ValueError, match=name.replace(".", r"\.")):
            read_array(tmp_path / name)
        assert main(["predict", str(tmp_path / name), "-o", str(tmp_path / "o.tif"),
                     "--model", model]) == 2
        err = capsys.readouterr().err.strip()
        assert name in err and "\n" not in err, err


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


def test_write_array_refuses_what_it_must_never_replace(ws):
    before = _snapshot(ws)
    for target, message in (("precious.zarr", "not a zarr store"), ("folder", "directory"),
                            ("fifo", "FIFO"), ("/dev/null", "device")):
        with pytest.raises(ValueError, match=message):
            write_array(target, np.zeros((2, 2), np.uint8))
    with pytest.raises(ValueError, match="exists"):
        write_array("old.tif", np.zeros((2, 2), np.uint8), overwrite=False)
    with pytest.raises(ValueError, match="device"):
        save_model(UNet(base_channels=2, depth=2), "/dev/null")
    assert _snapshot(ws) == before


# --- clear errors instead of tracebacks ------------------------------------------------------
@pytest.mark.parametrize("kwargs, message", [
    (dict(batch_size=-1), "batch_size must be a positive integer"),
    (dict(batch_size=0), "batch_size must be a positive integer"),
    (dict(tile=0), "tile must be a positive integer"),
    (dict(tile=-5), "tile must be a positive integer"),
    (dict(tile=True), "tile must be a positive integer"),
    (dict(tile=64.5), "tile must be a positive integer"),
    (dict(memory_budget=0), "memory_budget must be"),
    (dict(slices=[0.7]), "slice indices must be integers"),
])
def test_predict_refuses_nonsense_sizes(tiny_net, kwargs, message):
    from napari_unet.predict import predict

    with pytest.raises(ValueError, match=message):
        predict(tiny_net, np.zeros((2, 32, 32), np.float32), device="cpu", **kwargs)


@pytest.mark.parametrize("flag, value", [
    ("--tile", "0"), ("--tile", "-5"), ("--threshold", "nan"), ("--threshold", "inf"),
    ("--threshold", "2"), ("--threshold", "-1"), ("--seed-threshold", "nan"),
    ("--min-size", "-5"),
])
def test_predict_flags_out_of_range_are_usage_errors(ws, capsys, flag, value):
    with pytest.raises(SystemExit) as info:
        main(P + ["a.tif", "-o", "o.tif", flag, value])
    assert info.value.code == 2 and flag in capsys.readouterr().err
    assert not os.path.exists("o.tif")


def test_cpu_allocation_failure_triggers_the_smaller_tile_retry(tiny_net, monkeypatch):
    import napari_unet.predict as pr
    from napari_unet.devices import is_oom

    assert is_oom(RuntimeError("[enforce fail at alloc_cpu.cpp:118] DefaultCPUAllocator: "
                               "can't allocate memory: you tried to allocate 85899345920 bytes"))
    assert is_oom(MemoryError()) and not is_oom(RuntimeError("shape mismatch"))
    real, tiles = pr.predict_slice_iter, []

    def flaky(model, image, *, tile=None, **kwargs):
        tiles.append(tile)
        if tile is None or tile > 100:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried ...")
        return (yield from real(model, image, tile=tile, **kwargs))

    monkeypatch.setattr(pr, "predict_slice_iter", flaky)
    p = pr.predict(tiny_net, np.zeros((400, 400), np.float32), device="cpu", tile=100000,
                   precision="fp32")
    assert p.shape == (2, 400, 400) and tiles[0] == 100000 and tiles[-1] <= 100


@pytest.mark.parametrize("err, rc, text", [
    (OSError(28, "No space left on device", "/full/o.tif"), 2,
     "/full/o.tif: No space left on device"),
    (PermissionError(30, "Read-only file system", "/ro/m.pt"), 2,
     "/ro/m.pt: Read-only file system"),
    (FloatingPointError("loss is nan at step 3"), 2, "loss is nan at step 3"),
    (RuntimeError("DefaultCPUAllocator: can't allocate memory: 9 GB\nmore"), 2, "out of memory"),
    (MemoryError("too big"), 2, "out of memory"),
    (ValueError("line one\nline two"), 2, "line one"),
    (KeyError("oops"), 1, "internal error KeyError"),
])
def test_every_failure_is_one_line(err, rc, text):
    from napari_unet.cli import error_message

    msg, code = error_message(err)
    assert code == rc and text in msg and "\n" not in msg


def test_a_full_disk_is_one_line_and_debug_shows_the_traceback(ws, capsys, monkeypatch):
    def full(*args, **kwargs):
        raise OSError(28, "No space left on device", "o.tif")

    monkeypatch.setattr(tifffile, "imwrite", full)
    assert main(P + ["a.tif", "-o", "o.tif"]) == 2
    assert capsys.readouterr().err.strip().endswith("o.tif: No space left on device")
    assert not [n for n in os.listdir(".") if n.startswith(".o.tif")]
    with pytest.raises(OSError):
        main(["--debug"] + P + ["a.tif", "-o", "o.tif"])
    with pytest.raises(OSError):
        main(P + ["a.tif", "-o", "o.tif", "--debug"])


@pytest.mark.parametrize("truth, pred, message", [
    (np.zeros((0, 0), np.uint16), np.zeros((0, 0), np.uint16), "expected 2D"),
    (np.zeros((8, 8), np.uint16), np.zeros((8, 8), np.uint16), "no objects"),
    (-np.ones((8, 8), np.int32), np.ones((8, 8), np.int32), "negative"),
    (np.ones((8, 8), np.uint16), np.full((8, 8), np.nan, np.float32), "NaN"),
    (np.ones((8, 8), np.uint16), np.ones((8, 8), np.complex64), "got complex"),
    (np.full((8, 8), 0.5), np.ones((8, 8), np.uint16), "integer labels"),
    (np.ones((8, 8), np.uint16), np.ones((4, 8), np.uint16), "differs"),
])
@pytest.mark.parametrize("kind", ["nuclei", "em"])
def test_evaluate_refuses_what_it_cannot_score(tmp_path, capsys, truth, pred, message, kind):
    from napari_unet.metrics import evaluate_em, evaluate_nuclei

    with pytest.raises(ValueError, match=message):
        (evaluate_em if kind == "em" else evaluate_nuclei)(truth, pred)
    if truth.size:  # an empty TIFF is refused on reading already
        tifffile.imwrite(tmp_path / "t.tif", truth)
        tifffile.imwrite(tmp_path / "p.tif", pred)
        assert main(["evaluate", "--truth", str(tmp_path / "t.tif"), "--pred",
                     str(tmp_path / "p.tif"), "--kind", kind]) == 2
        assert message in capsys.readouterr().err


# --- the training loop, border weights and augmentation refuse nonsense ---------------------
@pytest.mark.parametrize("kwargs, message", [
    ({"lr": float("nan")}, "lr must be a finite number"),
    ({"lr": 0.0}, "need lr > 0"),
    ({"batch_size": 0}, "batch_size must be an integer >= 1"),
    ({"checkpoint_every": 0}, "checkpoint_every must be an integer >= 1"),
    ({"tile": 0}, "tile must be an integer >= 8"),
    ({"anchor_weight": float("nan")}, "anchor_weight must be a finite number"),
    ({"w0": 1e308}, "need finite w0 >= 0"),
    ({"sigma": 0.0}, "sigma > 0"),
    ({"steps": -5}, "steps must be an integer >= 0"),
])
def test_train_config_refuses_nonsense(kwargs, message):
    from napari_unet.train import TrainConfig

    with pytest.raises(ValueError, match=message):
        TrainConfig(**kwargs)


def test_fine_tune_refuses_zero_steps_and_a_dict_config(tiny_net, blobs):
    from napari_unet.train import TrainConfig, fine_tune

    img, lab = blobs
    with pytest.raises(ValueError, match="steps must be at least 1"):
        next(fine_tune(tiny_net, img, lab, TrainConfig(steps=0)))
    with pytest.raises(TypeError, match="config must be a TrainConfig"):
        next(fine_tune(tiny_net, img, lab, {"steps": 3}))


def test_border_weights_refuse_rgb_labels_and_infinite_parameters():
    from napari_unet.weights import border_weight_map

    with pytest.raises(ValueError, match="look like an RGB"):
        border_weight_map(np.zeros((64, 64, 3), np.uint8))
    with pytest.raises(ValueError, match="need finite w0"):
        border_weight_map(np.zeros((8, 8), np.uint8), w0=1e308)
    with pytest.raises(ValueError, match="sigma > 0"):
        border_weight_map(np.zeros((8, 8), np.uint8), sigma=float("nan"))


@pytest.mark.parametrize("kwargs", [{"grid": 0}, {"sigma": float("nan")}, {"sigma": float("inf")}])
def test_elastic_deform_refuses_bad_parameters(kwargs):
    from napari_unet.augment import elastic_deform

    with pytest.raises(ValueError):
        elastic_deform(np.zeros((16, 16), np.float32), np.zeros((16, 16), np.uint8), **kwargs)
