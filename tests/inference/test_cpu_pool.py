import threading

import numpy as np
import pytest
import torch

from napari_unet.inference import predict as predict_mod
from napari_unet.inference.cpu_pool import cpu_workers, tile_pool
from napari_unet.inference.predict import predict, predict_iter
from napari_unet.jobs import run


def test_pool_threads_run_single_threaded_and_the_caller_keeps_its_count():
    before = torch.get_num_threads()
    pool = tile_pool(2)
    counts = list(pool.map(lambda _: torch.get_num_threads(), range(6)))
    names = set(pool.map(lambda _: threading.current_thread().name, range(6)))
    assert counts == [1] * 6
    assert all(n.startswith("napari-unet-tile") for n in names)
    assert torch.get_num_threads() == before
    assert tile_pool(2) is pool  # created once


def test_worker_count_follows_threads_tasks_and_memory(monkeypatch):
    cpu, meta = torch.device("cpu"), torch.device("meta")
    monkeypatch.setattr(torch, "get_num_threads", lambda: 8)
    assert cpu_workers(cpu, 16, 10 * 2**20, 2**20) == 8
    assert cpu_workers(cpu, 3, 10 * 2**20, 2**20) == 3  # no more workers than tasks
    assert cpu_workers(cpu, 16, 10 * 2**20, 4 * 2**20) == 2  # memory for two tiles only
    assert cpu_workers(cpu, 16, 2**20, 4 * 2**20) == 1
    assert cpu_workers(meta, 16, 10 * 2**20, 2**20) == 1  # accelerators batch instead


@pytest.fixture
def two_workers(monkeypatch):
    monkeypatch.setattr(predict_mod, "cpu_workers", lambda *a: 2)


@pytest.mark.parametrize("tile", [68, None])  # several tiles per slice; one
@pytest.mark.parametrize("tta", [False, True])
def test_parallel_tiles_equal_the_serial_path(tiny_net, monkeypatch, tta, tile):
    img = np.random.default_rng(3).random((2, 61, 75)).astype(np.float32)
    monkeypatch.setattr(predict_mod, "cpu_workers", lambda *a: 1)
    serial = predict(tiny_net, img, tile=tile, precision="fp32", tta=tta)
    monkeypatch.setattr(predict_mod, "cpu_workers", lambda dev, n, *a: min(2, n))
    used = []
    monkeypatch.setattr(predict_mod, "tile_pool", lambda n: used.append(n) or tile_pool(n))
    parallel = predict(tiny_net, img, tile=tile, precision="fp32", tta=tta)
    np.testing.assert_allclose(parallel, serial, atol=1e-6)
    # per slice (its tiles, or its TTA transforms), or once for the two one-tile slices
    assert used == ([2] if tile is None and not tta else [2, 2])


def test_parallel_progress_is_in_order_and_cancel_stops_it(tiny_net, two_workers):
    img = np.random.default_rng(0).random((96, 96)).astype(np.float32)
    gen = predict_iter(tiny_net, img, tile=68, batch_size=1)
    done = []
    for ev in gen:
        done.append(ev.done)
        if len(done) == 3:
            break
    gen.close()
    assert done == [1, 2, 3]
    res = predict(tiny_net, img, tile=68, precision="fp32")  # the pool is usable afterwards
    np.testing.assert_allclose(res.sum(0), 1, atol=1e-5)


def test_stacks_of_one_tile_slices_run_slices_side_by_side(tiny_net, monkeypatch):
    stack = np.random.default_rng(4).random((5, 40, 52)).astype(np.float32)
    monkeypatch.setattr(predict_mod, "cpu_workers", lambda *a: 1)
    serial = run(predict_iter(tiny_net, stack, precision="fp32", uncertainty=True))
    monkeypatch.setattr(predict_mod, "cpu_workers", lambda dev, n, *a: min(2, n))
    used = []
    monkeypatch.setattr(predict_mod, "tile_pool", lambda n: used.append(n) or tile_pool(n))
    gen = predict_iter(tiny_net, stack, precision="fp32", uncertainty=True, slices=[4, 0, 2])
    events = []
    while True:
        try:
            events.append(next(gen))
        except StopIteration as stop:
            res = stop.value
            break
    assert used == [2]
    assert [(e.done, e.total, e.z) for e in events] == [(1, 3, 4), (2, 3, 0), (3, 3, 2)]
    for z in (4, 0, 2):
        np.testing.assert_allclose(res.probabilities[:, z], serial.probabilities[:, z], atol=1e-6)
        np.testing.assert_allclose(res.uncertainty[z], serial.uncertainty[z], atol=1e-6)
    assert not res.probabilities[:, 1].any()  # not asked for
    gen = predict_iter(tiny_net, stack, precision="fp32")
    assert next(gen).done == 1
    gen.close()  # cancel: the rest of the stack is dropped, the pool stays usable
    np.testing.assert_allclose(predict(tiny_net, stack[:2], precision="fp32"),
                               serial.probabilities[:, :2], atol=1e-6)


def test_a_prepared_model_is_never_converted_again(make_tiny_net, monkeypatch):
    # converting a module swaps its parameters' storage and strides; a thread in a forward
    # pass on the same model meanwhile read wrong weights (dask chunks, session 7)
    net, img = make_tiny_net(), np.random.default_rng(0).random((70, 90)).astype(np.float32)
    first = predict(net, img, precision="fp32")
    assert all(p.is_contiguous(memory_format=torch.channels_last)
               for p in net.parameters() if p.dim() == 4)
    calls = []
    original = torch.nn.Module._apply
    monkeypatch.setattr(torch.nn.Module, "_apply",
                        lambda self, *a, **k: calls.append(self) or original(self, *a, **k))
    again = predict(net, img, precision="fp32")
    assert calls == []
    np.testing.assert_array_equal(again, first)
    net.train()  # a model put back into training mode is prepared again
    predict(net, img, precision="fp32")
    assert calls and not net.training


def test_threads_sharing_a_fresh_model_get_the_serial_result(make_tiny_net):
    img = np.random.default_rng(1).random((2, 100, 120)).astype(np.float32)
    ref = predict(make_tiny_net(), img, precision="fp32")
    for _ in range(3):
        net, start, out = make_tiny_net(), threading.Barrier(4), {}

        def job(k: int, net=net, start=start, out=out) -> None:
            start.wait()
            out[k] = predict(net, img, precision="fp32")

        threads = [threading.Thread(target=job, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        for k in range(4):
            np.testing.assert_allclose(out[k], ref, atol=1e-5)
