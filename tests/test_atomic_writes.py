"""Issue 17, item 5: an interrupted write keeps the previous output; temporaries are removed."""

import os
import subprocess
import sys
import textwrap

import dask.array as da
import numpy as np
import pytest
import tifffile
import zarr

from napari_unet.image_files import write_array
from napari_unet.inference.largedata import predict_dask, predict_to_store
from napari_unet.model_files import load_model, save_model
from napari_unet.outputs import atomic_output, clean_stale


def _dead_pid():
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def _temporaries(folder):
    return sorted(n for n in os.listdir(folder) if ".napari-unet-" in n)


def test_stale_temporaries_of_killed_runs_are_removed(tmp_path):
    dead, alive = _dead_pid(), os.getppid()
    stale = tmp_path / f".out.tif.napari-unet-{dead}-00aa.tmp"
    stale.write_bytes(b"half a tiff")
    busy = tmp_path / f".out.tif.napari-unet-{alive}-00bb.tmp"  # another run, still writing
    busy.write_bytes(b"in progress")
    (tmp_path / f".out.zarr.napari-unet-{dead}-00cc.tmp").mkdir()
    write_array(tmp_path / "out.tif", np.ones((3, 3), np.uint8))
    write_array(tmp_path / "out.zarr", np.ones((3, 3), np.uint8))
    assert _temporaries(tmp_path) == [busy.name]


def test_a_store_moved_aside_by_a_killed_swap_is_put_back(tmp_path):
    old = tmp_path / f".s.zarr.napari-unet-{_dead_pid()}-00dd.old"
    zarr.open(str(old), mode="w", shape=(2,), dtype="u1")[...] = 5
    clean_stale(tmp_path / "s.zarr")
    assert (np.asarray(zarr.open(str(tmp_path / "s.zarr"), mode="r")) == 5).all()
    assert not _temporaries(tmp_path)


def _failing(image, at=3):
    """A lazy image whose ``at``-th chunk raises when computed."""
    def block(x, block_info=None):
        if block_info[0]["chunk-location"] == (at // 2, at % 2):
            raise RuntimeError("disk gone")
        return x
    return da.from_array(image, chunks=64).map_blocks(block, dtype=image.dtype)


WRITERS = {
    "tif": lambda p, v: write_array(p / "o.tif", np.full((64, 64), v, np.uint8)),
    "zarr": lambda p, v: write_array(p / "o.zarr", np.full((64, 64), v, np.uint8)),
}


@pytest.mark.parametrize("name", ["tif", "zarr"])
def test_a_failed_write_keeps_the_previous_file(tmp_path, monkeypatch, name):
    WRITERS[name](tmp_path, 3)
    import napari_unet.image_files as files

    def broken(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(tifffile, "imwrite", broken)
    monkeypatch.setattr(zarr, "open", broken)
    with pytest.raises(OSError, match="No space"):
        WRITERS[name](tmp_path, 4)
    monkeypatch.undo()
    assert (np.asarray(files.read_array(tmp_path / f"o.{name}")) == 3).all()
    assert not _temporaries(tmp_path)


@pytest.mark.parametrize("suffix", [".tif", ".zarr"])
def test_a_failed_streamed_prediction_keeps_the_previous_output(tmp_path, tiny_net, suffix):
    image = np.random.default_rng(0).integers(0, 255, (128, 128)).astype(np.float32)
    out = tmp_path / f"pred{suffix}"
    predict_to_store(tiny_net, image, out, chunks=64, threshold=0.5, precision="fp32")
    before = np.asarray(tifffile.imread(out) if suffix == ".tif" else zarr.open(str(out)))
    with pytest.raises(RuntimeError, match="disk gone"):
        predict_to_store(tiny_net, _failing(image), out, chunks=64, threshold=0.5)
    after = np.asarray(tifffile.imread(out) if suffix == ".tif" else zarr.open(str(out)))
    np.testing.assert_array_equal(before, after)
    assert not _temporaries(tmp_path)


def test_a_failed_model_save_keeps_the_previous_model(tmp_path, tiny_net, monkeypatch):
    save_model(tiny_net, tmp_path / "m.pt")
    import napari_unet.model_files as io

    monkeypatch.setattr(io.torch, "save", lambda obj, f: (f.write(b"PK\x03"), 1 / 0))
    with pytest.raises(ZeroDivisionError):
        save_model(tiny_net, tmp_path / "m.pt")
    monkeypatch.undo()
    assert load_model(tmp_path / "m.pt").config == tiny_net.config
    assert not _temporaries(tmp_path)


def test_atomic_output_refuses_nothing_but_writes_through_links(tmp_path):
    (tmp_path / "t.txt").write_text("old")
    os.symlink("t.txt", tmp_path / "l.txt")
    with atomic_output(tmp_path / "l.txt") as tmp:
        tmp.write_text("new")
    assert (tmp_path / "l.txt").is_symlink() and (tmp_path / "t.txt").read_text() == "new"


# --- SIGKILL at random moments ----------------------------------------------------------------
# The script writes and checks each output once itself (so that the forks start warm), then
# forks children that write version after version until they are killed; after each kill
# the output must be one complete version. torch runs on one thread and dask without
# threads, and zarr resets its IO thread after a fork, so the forks are safe.
KILL_SCRIPT = textwrap.dedent('''
    import os, random, signal, sys, time
    import dask, numpy as np, tifffile, zarr, torch
    from napari_unet import autosave
    from napari_unet.image_files import write_array
    from napari_unet.model_files import load_model, save_model
    from napari_unet.inference.largedata import predict_to_store

    rounds, folder = int(sys.argv[1]), sys.argv[2]
    os.chdir(folder)
    torch.set_num_threads(1)
    dask.config.set(scheduler="synchronous")

    def arr(v):
        return np.full((768, 768), 1 + v % 200, np.uint8)

    def same_everywhere(a):
        assert a.shape == (768, 768) and a.min() == a.max() > 0, (a.shape, a.min(), a.max())

    def model(v):
        m = load_model("tiny.pt")
        m.record["version"] = v
        save_model(m, "m.pt")

    def stream(out):
        def write(v):
            predict_to_store(load_model("tiny.pt"), zarr.open("in.zarr", mode="r"), out,
                             chunks=64, precision="fp32")
        return write

    def stream_check(out):
        def check():
            got = np.asarray(tifffile.imread(out) if out.endswith(".tif")
                             else zarr.open(out, mode="r"))
            np.testing.assert_allclose(got, np.load("expected.npy"), atol=1e-5)
        return check

    def autosave_write(v):
        autosave.write_autosave("l.autosave.npz", np.full((4, 256, 256), 1 + v % 200, np.uint16),
                                [v % 4], {"layer": "l"}, backup=v % 3 == 0)

    def autosave_check():
        data, marks, meta = autosave.read_autosave("l.autosave.npz")
        assert data.shape == (4, 256, 256) and data.min() == data.max() > 0
        assert marks == [(int(data.flat[0]) - 1) % 4] and meta["layer"] == "l"

    WRITERS = {
        "autosave": (autosave_write, autosave_check),
        "tiff": (lambda v: write_array("a.tif", arr(v)),
                 lambda: same_everywhere(tifffile.imread("a.tif"))),
        "zarr": (lambda v: write_array("a.zarr", arr(v)),
                 lambda: same_everywhere(np.asarray(zarr.open("a.zarr", mode="r")))),
        "model": (model, lambda: load_model("m.pt").record["version"]),
        "streamed tiff": (stream("s.tif"), stream_check("s.tif")),
        "streamed zarr": (stream("s.zarr"), stream_check("s.zarr")),
    }

    def writing_child(write):
        pid = os.fork()
        if pid == 0:
            try:
                v = 1
                while True:
                    write(v)
                    v += 1
            finally:
                os._exit(1)
        return pid

    rng = random.Random(17)
    for name, (write, check) in WRITERS.items():
        write(0)
        check()
        for r in range(rounds):
            pid = writing_child(write)
            time.sleep(rng.uniform(0.0, 0.2))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            try:
                check()
            except Exception as err:
                sys.exit(f"{name}: the output was broken after kill {r + 1}: {err}")
        write(0)  # a normal write after the kills removes their temporaries
    left = [n for _, _, names in os.walk(".") for n in names
            if ".napari-unet-" in n or n.endswith(".tmp")]
    sys.exit(f"temporaries left: {left}" if left else 0)
''')


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_sigkill_never_breaks_the_previous_output(tmp_path, tiny_net):
    save_model(tiny_net, tmp_path / "tiny.pt")
    image = np.random.default_rng(0).integers(0, 255, (256, 256)).astype(np.uint8)
    zarr.open(str(tmp_path / "in.zarr"), mode="w", shape=image.shape, dtype="u1")[...] = image
    expected = predict_dask(tiny_net, image, chunks=64, precision="fp32").compute()
    np.save(tmp_path / "expected.npy", expected)
    (tmp_path / "kill.py").write_text(KILL_SCRIPT)
    proc = subprocess.run([sys.executable, str(tmp_path / "kill.py"), "4", str(tmp_path)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]


def test_a_model_that_cannot_be_saved_is_rescued(tmp_path, tiny_net, monkeypatch):
    from napari_unet.model_files import save_model_or_rescue

    monkeypatch.chdir(tmp_path)
    (tmp_path / "file").write_text("x")
    out, warning = save_model_or_rescue(tiny_net, tmp_path / "ok.pt")
    assert out == tmp_path / "ok.pt" and warning is None
    out, warning = save_model_or_rescue(tiny_net, tmp_path / "file" / "m.pt")  # under a file
    assert out.parent == tmp_path and out.name.startswith("m.rescued-")
    assert str(out) in warning and "could not write" in warning
    assert load_model(out).config == tiny_net.config

