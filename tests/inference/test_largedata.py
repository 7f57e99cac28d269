import dask.array as da
import numpy as np
import tifffile
import zarr

from napari_unet.inference.largedata import predict_dask, predict_to_store
from napari_unet.inference.predict import predict
from napari_unet.inference.predict_config import PredictConfig


def test_map_overlap_equals_in_memory_prediction(tiny_net):
    img = np.random.default_rng(0).random((2, 150, 203)).astype(np.float32)
    ref = predict(tiny_net, img, tile=60, precision="fp32")[1]
    lazy = predict_dask(tiny_net, da.from_array(img, chunks=(1, 50, 50)), chunks=48, tile=60,
                        precision="fp32")
    assert lazy.chunks[-1][0] == 48
    np.testing.assert_allclose(lazy.compute(), ref, atol=1e-5)
    cfg = PredictConfig(tile=60, precision="fp32", uncertainty=True)  # uncertainty: not made
    np.testing.assert_allclose(predict_dask(tiny_net, img, cfg, chunks=48).compute(), ref,
                               atol=1e-5)


def test_streams_into_zarr_and_tiff(tiny_net, tmp_path):
    src = zarr.open(str(tmp_path / "in.zarr"), mode="w", shape=(300, 260), chunks=(64, 64),
                    dtype="uint8")
    src[...] = np.random.default_rng(0).integers(0, 255, (300, 260), dtype=np.uint8)
    # fp32, compared away from 0.5: a random tiny net puts many probabilities right at 0.5.
    # This test caught dask's threads converting the shared model while others ran it
    # (10 % of the pixels wrong in one run of three; see devices.prepare_for_inference)
    out = predict_to_store(tiny_net, src, tmp_path / "out.zarr", chunks=128, precision="fp32")
    z = np.asarray(zarr.open(str(out), mode="r"))
    assert z.shape == (300, 260)
    tif = predict_to_store(tiny_net, src, tmp_path / "out.tif", chunks=128, threshold=0.5,
                           precision="fp32")
    mask = tifffile.imread(tif)
    assert mask.shape == (300, 260) and set(np.unique(mask)) <= {0, 1}
    clear = np.abs(z - 0.5) > 1e-3
    assert clear.mean() > 0.5
    np.testing.assert_array_equal(mask[clear], (z[clear] > 0.5).astype(np.uint8))


def test_same_call_runs_on_a_local_cluster(tiny_net):
    from distributed import Client, LocalCluster

    img = np.random.default_rng(1).random((130, 170)).astype(np.float32)
    lazy = predict_dask(tiny_net, img, chunks=64, tile=60, precision="fp32")
    with LocalCluster(n_workers=1, threads_per_worker=1, processes=False,
                      dashboard_address=None) as cluster, Client(cluster):
        out = lazy.compute()
    np.testing.assert_allclose(out, predict(tiny_net, img, tile=60, precision="fp32")[1], atol=1e-5)
