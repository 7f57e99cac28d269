"""Tests of napari_unet.training.border_weights (Eq. 2 of the U-Net paper) against a direct reference."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage as ndi

from napari_unet.training.border_weights import (
    border_distances,
    border_weight_map,
    cutoff_distance,
    separation_borders,
    training_targets,
)
from tests.training.reference_weights import ref_distances, ref_separation, ref_weight

# ----------------------------------------------------------------------------- helpers


def blobs(shape, n, seed, rmin=1, rmax=7, touching=True):
    """Random disks with random ids; later disks overwrite earlier ones (so they touch)."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    yy, xx = np.indices(shape)
    for _ in range(n):
        cy, cx = rng.integers(0, shape[0]), rng.integers(0, shape[1])
        r = rng.integers(rmin, rmax + 1)
        disk = (yy - cy) ** 2 + (xx - cx) ** 2 <= r * r
        if not touching and ndi.binary_dilation(lab > 0, iterations=2)[disk].any():
            continue
        lab[disk] = rng.integers(1, 3 * n + 2)
    return lab


def assert_close_with_inf(a, b, atol=1e-3):
    assert np.array_equal(np.isinf(a), np.isinf(b))
    fin = np.isfinite(b)
    np.testing.assert_allclose(a[fin], b[fin], rtol=0, atol=atol)


# ------------------------------------------------------------------------ distances


@pytest.mark.parametrize("seed", range(6))
def test_distances_exact_vs_reference(seed):
    rng = np.random.default_rng(100 + seed)
    shape = tuple(int(s) for s in rng.integers(20, 70, 2))
    lab = blobs(shape, int(rng.integers(2, 20)), seed, touching=seed % 2 == 0)
    d1, d2 = border_distances(lab)
    r1, r2 = ref_distances(lab)
    assert d1.dtype == d2.dtype == np.float32 and d1.shape == lab.shape
    assert_close_with_inf(d1, r1)
    assert_close_with_inf(d2, r2)


def test_distances_exact_far_apart_instances():
    # second instance much farther than the exact pass window: exercises the crop fallback
    lab = np.zeros((90, 130), np.int32)
    lab[5:8, 3:6] = 4
    lab[80:84, 120:125] = 9
    lab[40, 60] = 2
    d1, d2 = border_distances(lab)
    r1, r2 = ref_distances(lab)
    assert np.nanmax(r2) > 60
    assert_close_with_inf(d1, r1)
    assert_close_with_inf(d2, r2)


@pytest.mark.parametrize("radius", [0.5, 3.0, 7.5])
def test_distances_windowed_exact_inside_inf_outside(radius):
    lab = blobs((50, 60), 12, seed=7)
    d1, d2 = border_distances(lab, max_distance=radius)
    r1, r2 = ref_distances(lab)
    assert np.array_equal(np.isfinite(d1), r1 <= radius)
    assert np.array_equal(np.isfinite(d2), r2 <= radius)
    np.testing.assert_allclose(d1[r1 <= radius], r1[r1 <= radius], atol=1e-3)
    np.testing.assert_allclose(d2[r2 <= radius], r2[r2 <= radius], atol=1e-3)


def test_distances_no_or_one_instance():
    d1, d2 = border_distances(np.zeros((5, 6), np.uint8))
    assert np.isinf(d1).all() and np.isinf(d2).all()
    lab = np.zeros((5, 6), np.uint8)
    lab[2, 3] = 7
    d1, d2 = border_distances(lab)
    assert np.isinf(d2).all()
    np.testing.assert_allclose(d1, ref_distances(lab)[0])


# ---------------------------------------------------------------- separation borders


@pytest.mark.parametrize("seed", range(4))
def test_separation_matches_grey_morphology(seed):
    lab = blobs((40, 50), 25, seed).astype(np.uint16)
    before = lab.copy()
    sep = separation_borders(lab)
    assert sep.dtype == lab.dtype and np.array_equal(lab, before)
    np.testing.assert_array_equal(sep, ref_separation(lab))


def test_separation_leaves_gap_and_keeps_isolated():
    lab = np.zeros((6, 10), np.int32)
    lab[1:5, 1:4] = 1
    lab[1:5, 4:7] = 2  # touches 1
    lab[1:3, 8:10] = 3  # isolated (one background column from 2)
    sep = separation_borders(lab)
    assert (sep[:, 3] == 0).all() and (sep[:, 4] == 0).all()
    assert np.array_equal(sep[lab == 3], lab[lab == 3])
    # no two different instances touch (8-connectivity) any more
    dil = ndi.grey_dilation(sep, size=(3, 3))
    assert not ((sep > 0) & (dil != sep)).any()


def test_separation_binary_and_ignore():
    mask = np.zeros((5, 5), bool)
    mask[1:4, 1:4] = True
    assert np.array_equal(separation_borders(mask), mask)
    lab = np.array([[1, 1, 2, 2], [-1, -1, 2, 2]])
    sep = separation_borders(lab, ignore_label=-1)
    np.testing.assert_array_equal(sep, [[1, 0, 0, 2], [-1, -1, 0, 2]])


# ------------------------------------------------------------------------ weight map


@pytest.mark.parametrize(("seed", "sigma"), [(0, 5.0), (1, 5.0), (2, 2.0), (3, 1.2)])
def test_weight_map_vs_reference_bound(seed, sigma):
    w0 = 10.0
    lab = blobs((64, 72), 18, seed, touching=seed != 1)
    w = border_weight_map(lab, w0=w0, sigma=sigma)
    wref, term = ref_weight(lab, w0, sigma)
    assert w.dtype == np.float32 and np.isfinite(w).all()
    matters = term >= 1e-6 * w0
    assert matters.any() and (~matters).any()
    err = np.abs(w.astype(np.float64) - wref)
    assert err[matters].max() <= 1e-5 * np.abs(wref[matters]).max()  # float32 rounding only
    assert err[~matters].max() <= 1e-6 * w0
    # where the term matters, fast windowed distances agree with the reference to 1e-3 px
    sep = separation_borders(lab)
    cut = cutoff_distance(sigma)
    d1, d2 = border_distances(sep, max_distance=cut)
    r1, r2 = ref_distances(sep)
    assert np.abs(d1[matters] - r1[matters]).max() <= 1e-3
    assert np.abs(d2[matters] - r2[matters]).max() <= 1e-3


def test_weight_map_border_term_only_on_background_and_class_balance():
    lab = np.zeros((30, 40), np.int32)
    lab[5:15, 5:15] = 1
    lab[5:15, 15:25] = 2  # touching: separated
    w = border_weight_map(lab, w0=10.0)
    target, weight = training_targets(lab)
    np.testing.assert_array_equal(weight, w)
    fg = target == 1
    assert np.unique(w[fg]).size == 1  # no border term on foreground
    n, n_fg = fg.size, fg.sum()
    np.testing.assert_allclose(w[fg][0], n / (2 * n_fg), rtol=1e-6)
    gap = w[10, 14:16]
    assert (gap > 8.9).all()  # separation border: d1 = 1, d2 = 2 (term 8.35)
    wc = border_weight_map(lab, w0=0.0)
    np.testing.assert_allclose(wc.mean(), 1.0, rtol=1e-5)
    flat = border_weight_map(lab, w0=0.0, class_balance=False)
    assert (flat == 1).all()


def test_ignore_label_weight_zero_and_excluded():
    lab = np.zeros((20, 20), np.int64)
    lab[2:6, 2:6] = 3
    lab[12:16, 12:16] = 5
    lab[:, 18:] = -1
    w = border_weight_map(lab, w0=0.0, ignore_label=-1)
    assert (w[:, 18:] == 0).all()
    ann = lab != -1
    n, n_fg = ann.sum(), (lab > 0).sum()
    np.testing.assert_allclose(w[3, 3], n / (2 * n_fg), rtol=1e-6)
    np.testing.assert_allclose(w[ann].mean(), 1.0, rtol=1e-5)
    target, weight = training_targets(lab, ignore_label=-1)
    assert target.dtype == np.int64 and (target[:, 18:] == 0).all()
    assert (weight[:, 18:] == 0).all()
    # a positive ignore label is not an instance either
    lab255 = np.where(lab == -1, 255, lab).astype(np.uint8)
    np.testing.assert_array_equal(border_weight_map(lab255, ignore_label=255),
                                  border_weight_map(lab, ignore_label=-1))


def test_binary_mask_becomes_components():
    mask = blobs((40, 40), 8, seed=3, touching=False) > 0
    comps, _ = ndi.label(mask, structure=np.ones((3, 3)))
    expected = border_weight_map(comps)
    np.testing.assert_array_equal(border_weight_map(mask), expected)
    np.testing.assert_array_equal(border_weight_map(mask.astype(np.uint8)), expected)
    d1, d2 = border_distances(mask)
    assert np.isfinite(d2).any()


def test_stack_per_slice_with_empty_slice():
    a = blobs((30, 30), 6, seed=1)
    stack = np.stack([a, np.zeros_like(a), a[::-1]])
    w = border_weight_map(stack)
    assert w.shape == stack.shape and np.isfinite(w).all()
    np.testing.assert_array_equal(w[0], border_weight_map(a))
    np.testing.assert_array_equal(w[2], border_weight_map(a[::-1]))
    assert (w[1] == 1).all()
    d1, d2 = border_distances(stack)
    assert np.isinf(d1[1]).all() and np.isinf(d2[1]).all()
    assert_close_with_inf(d2[0], ref_distances(a)[1])
    sep = separation_borders(stack)
    np.testing.assert_array_equal(sep[2], separation_borders(a[::-1]))


def test_all_background_single_instance_and_one_pixel():
    w = border_weight_map(np.zeros((8, 9), np.uint16))
    assert (w == 1).all()
    lab = np.zeros((8, 9), np.uint16)
    lab[3:5, 3:5] = 2
    w = border_weight_map(lab)
    assert np.isfinite(w).all()
    assert np.unique(w[lab == 0]).size == 1  # d2 = inf: no border term
    for value in (0, 5):
        one = np.array([[value]])
        assert border_weight_map(one).tolist() == [[1.0]]
        t, wt = training_targets(one)
        assert t.tolist() == [[int(value > 0)]] and wt.tolist() == [[1.0]]
        d1, d2 = border_distances(one)
        assert np.isinf(d2).all() and (d1[0, 0] == 0) == (value > 0)


def test_integer_valued_floats_and_huge_ids():
    lab = blobs((30, 35), 10, seed=4)
    expected = border_weight_map(lab)
    np.testing.assert_array_equal(border_weight_map(lab.astype(np.float32)), expected)
    huge = np.where(lab > 0, lab.astype(np.uint64) + 2**40, 0)
    np.testing.assert_array_equal(border_weight_map(huge), expected)
    np.testing.assert_array_equal(border_distances(huge)[1], border_distances(lab)[1])


def test_inputs_not_modified():
    lab = blobs((30, 30), 10, seed=5)
    before = lab.copy()
    border_weight_map(lab)
    border_distances(lab)
    training_targets(lab)
    separation_borders(lab)
    assert np.array_equal(lab, before)


@pytest.mark.parametrize(
    ("labels", "kwargs", "error", "match"),
    [
        (np.array([[0.0, 1.5], [2.0, 0.0]]), {}, ValueError, "integer-valued"),
        (np.array([[0.0, np.nan], [2.0, 0.0]]), {}, ValueError, "NaN"),
        (np.array([[0, -2], [2, 0]]), {}, ValueError, "negative"),
        (np.array([[0, -2], [2, 0]]), {"ignore_label": -1}, ValueError, "negative"),
        (np.array([[0, 1j], [2, 0]]), {}, TypeError, "dtype"),
        (np.array([["a", "b"]]), {}, TypeError, "dtype"),
        (np.zeros(5, int), {}, ValueError, "2D"),
        (np.zeros((2, 2, 2, 2), int), {}, ValueError, "2D"),
        (np.zeros((0, 4), int), {}, ValueError, "empty"),
        (np.zeros((3, 3), int), {"ignore_label": 0}, ValueError, "ignore_label"),
        (np.zeros((3, 3), int), {"sigma": 0.0}, ValueError, "sigma > 0"),
        (np.zeros((3, 3), int), {"w0": -1.0}, ValueError, "w0 >= 0"),
    ],
)
def test_bad_input(labels, kwargs, error, match):
    with pytest.raises(error, match=match):
        border_weight_map(labels, **kwargs)


def test_bad_input_other_functions():
    with pytest.raises(ValueError, match="negative"):
        border_distances(np.array([[0, -1]]))
    with pytest.raises(ValueError, match="integer-valued"):
        separation_borders(np.array([[0.5, 1.0]]))
    with pytest.raises(ValueError, match="max_distance"):
        border_distances(np.zeros((3, 3), int), max_distance=0)
    with pytest.raises(ValueError, match="2D"):
        training_targets(np.zeros((2, 3, 3), int))
    # negative values equal to ignore_label are fine
    d1, _ = border_distances(np.array([[1, -1], [0, 0]]), ignore_label=-1)
    assert d1[0, 0] == 0 and d1[1, 1] == pytest.approx(np.sqrt(2))


@pytest.mark.parametrize("block", [1, 150, 5000])
def test_row_blocks_and_threads_give_identical_results(monkeypatch, block):
    import napari_unet.training._distances as dmod
    import napari_unet.training.border_weights as wmod

    lab = blobs((90, 230), 40, seed=8)
    w_ref = border_weight_map(lab)
    d_ref = border_distances(lab, max_distance=9.0)
    monkeypatch.setattr(dmod, "_BLOCK_ELEMENTS", block)  # many blocks: state carried over
    monkeypatch.setattr(wmod, "_THREAD_MIN_PIXELS", 0)
    monkeypatch.setattr(wmod, "THREADS", 2)  # two vertical strips with a halo
    strips = []
    term = wmod._border_term
    monkeypatch.setattr(wmod, "_border_term", lambda *a: strips.append(a[2:4]) or term(*a))
    np.testing.assert_array_equal(border_weight_map(lab), w_ref)
    assert sorted(strips) == [(0, 115), (115, 230)]
    d1, d2 = border_distances(lab, max_distance=9.0)
    np.testing.assert_array_equal(d1, d_ref[0])
    np.testing.assert_array_equal(d2, d_ref[1])
    wref, _ = ref_weight(lab)
    assert np.abs(border_weight_map(lab) - wref).max() <= 1e-5
