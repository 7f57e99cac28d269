"""Issue 17: a careless or hostile user's inputs, outputs and model files.

Every refused case must exit with status 2 and one line naming the problem, and must leave
every file as it was.
"""

import os
import stat

import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.cli import main
from napari_unet.image_files import read_array, write_array
from napari_unet.model import UNet
from napari_unet.model_files import save_model


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
    from napari_unet.inference.predict import predict

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
    import napari_unet.inference.predict as pr
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

