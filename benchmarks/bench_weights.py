"""Benchmark napari_unet.training.border_weights against the direct reference (one EDT per instance).

Run from anywhere: ``python benchmarks/bench_weights.py [--images 8 9 35] [--repeats 5]``.
Uses the DSB2018 label stack in ``<repo>/../shared/data/dsb2018``. Prints per-image timings
(medians), the max differences on background pixels, the 2048x2048 / 2000-instance timing,
and as last line ``RESULT speedup=... max_abs_dw=... t2048_s=...``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import tifffile

from napari_unet.training.border_weights import border_distances, border_weight_map

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from reference_weights import ref_weight_map  # noqa: E402

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "dsb2018"


def synthetic(shape=(2048, 2048), n=2000, seed=0) -> np.ndarray:
    """Random disks (radius 5-13 px; later ones overwrite, so many touch) until ``n`` show."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    i = 0
    while i < n or len(np.unique(lab)) - 1 < n:
        i += 1
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), rng.integers(5, 14)
        y0, x0 = max(cy - r, 0), max(cx - r, 0)
        yy, xx = np.ogrid[y0:min(cy + r + 1, shape[0]), x0:min(cx + r + 1, shape[1])]
        sub = lab[y0:y0 + yy.shape[0], x0:x0 + xx.shape[1]]
        sub[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = i
    return lab


def timed(fn, repeats: int) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, nargs="*", default=None,
                    help="indices into the 520x696 stack (default: 3 with ~140 nuclei)")
    ap.add_argument("--repeats", type=int, default=5, help="runs of the project per image")
    ap.add_argument("--ref-repeats", type=int, default=3, help="runs of the reference")
    a = ap.parse_args()

    stack = tifffile.imread(DATA / "fluo_520x696_labels.tif")
    counts = [len(np.unique(s)) - 1 for s in stack]
    idx = a.images
    if idx is None:  # the three images whose instance count is closest to 140
        idx = sorted(np.argsort([abs(c - 140) for c in counts], kind="stable")[:3].tolist())
    speedups, dws, dd1s, dd2s = [], [], [], []
    for i in idx:
        lab = stack[i]
        t_ref, (w_ref, sep, r1, r2) = timed(lambda lab=lab: ref_weight_map(lab), a.ref_repeats)
        t_w, w = timed(lambda lab=lab: border_weight_map(lab), a.repeats)
        t_d, (d1, d2) = timed(lambda sep=sep: border_distances(sep), a.repeats)
        bg = sep == 0
        dw = float(np.abs(w.astype(np.float64) - w_ref)[bg].max())
        fin1, fin2 = bg & np.isfinite(r1), bg & np.isfinite(r2)
        dd1 = float(np.abs(d1[fin1] - r1[fin1]).max(initial=0.0))
        dd2 = float(np.abs(d2[fin2] - r2[fin2]).max(initial=0.0))
        inf_ok = np.array_equal(np.isinf(d2), np.isinf(r2))
        speedups.append(t_ref / t_w)
        dws.append(dw)
        dd1s.append(dd1)
        dd2s.append(dd2)
        print(f"image {i:2d} ({counts[i]:3d} instances): reference {t_ref:.3f} s, "
              f"border_weight_map {t_w * 1e3:.1f} ms (x{t_ref / t_w:.0f}), "
              f"border_distances exact {t_d * 1e3:.1f} ms | background: "
              f"max|dd1| {dd1:.2e} max|dd2| {dd2:.2e} max|dw| {dw:.2e} inf-pattern {inf_ok}")

    big = synthetic()
    border_weight_map(big[:256, :256])  # warm-up
    t_big, _ = timed(lambda: border_weight_map(big), 3)
    print(f"synthetic 2048x2048, {len(np.unique(big)) - 1} instances: "
          f"border_weight_map {t_big:.3f} s (median of 3)")
    speedup = statistics.median(speedups)
    print(f"median speedup x{speedup:.1f}; max|dd1| {max(dd1s):.2e}, max|dd2| {max(dd2s):.2e}")
    print(f"RESULT speedup={speedup:.1f} max_abs_dw={max(dws):.3g} t2048_s={t_big:.3f}")


if __name__ == "__main__":
    main()
