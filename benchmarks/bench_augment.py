"""Benchmark napari_unet.training.augment against the ``elasticdeform`` package on the CPU.

Usage: ``python benchmarks/bench_augment.py [--size 512] [--runs 15] [--seeds 200] [--threads 1]``

``elasticdeform`` is a benchmark-only dependency (its PyPI wheel fails under NumPy 2):
``pip install --no-binary elasticdeform elasticdeform``. Without it the comparison is
skipped and ``speedup=nan`` is reported.

The last line is ``RESULT speedup=<elasticdeform / augment_sample> sigma_measured=<px>``.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_unet.training.augment import AugmentConfig, augment_sample, elastic_deform


def median_ms(fns: dict, runs: int) -> dict[str, float]:
    """Median wall time of each function in ms; runs are interleaved so that load
    changes on a shared machine hit all candidates alike."""
    for fn in fns.values():
        fn(0)  # warm-up (caches, torch kernels)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for seed in range(1, runs + 1):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn(seed)
            times[name].append(time.perf_counter() - t0)
    return {name: 1e3 * float(np.median(t)) for name, t in times.items()}


def measured_sigma(n: int, seeds: int, sigma: float, grid: int) -> tuple[float, float]:
    """Warp a coordinate ramp with elastic_deform; read the displacements at the grid nodes.

    Returns the RMS over all nodes (mirroring at border nodes only flips signs) and the
    standard deviation at the centre node.
    """
    yy, xx = np.mgrid[:n, :n].astype(np.float32)
    ramp = np.stack([yy, xx])
    labels = np.zeros((n, n), np.uint8)
    nodes = np.round(np.linspace(0, n - 1, grid)).astype(int)
    disp = []
    for seed in range(seeds):
        warped, _, _ = elastic_deform(ramp, labels, grid=grid, sigma=sigma, rng=seed)
        disp.append((warped - ramp)[:, nodes[:, None], nodes[None, :]])
    d = np.stack(disp)
    return float(np.sqrt((d**2).mean())), float(d[:, :, grid // 2, grid // 2].std())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (elasticdeform is single-threaded)"
    )
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    runs = max(10, args.runs)

    rng = np.random.default_rng(0)
    n = args.size
    image = rng.random((n, n), dtype=np.float32)
    labels = (rng.random((n, n)) < 0.3).astype(np.int32) * rng.integers(1, 50, (n, n))
    labels = labels.astype(np.int32)
    weights = (1.0 + rng.random((n, n))).astype(np.float32)
    print(f"{n}x{n} image + labels + weights, torch threads={torch.get_num_threads()}")

    elastic_only = AugmentConfig(flips=False, rotate=False, shift=0.0, intensity=False)
    timings = {
        "elastic_deform": lambda s: elastic_deform(image, labels, weights, rng=s),
        "augment_sample (elastic only)": lambda s: augment_sample(
            image, labels, weights, config=elastic_only, rng=s
        ),
        "augment_sample (all, default)": lambda s: augment_sample(image, labels, weights, rng=s),
    }
    try:
        import elasticdeform
    except ImportError:
        elasticdeform = None
        print(
            "elasticdeform is not installed: comparison skipped "
            "(pip install --no-binary elasticdeform elasticdeform)"
        )
    else:
        timings["elasticdeform.deform_random_grid"] = lambda s: elasticdeform.deform_random_grid(
            [image, labels, weights], sigma=10.0, points=3, order=[3, 0, 1]
        )

    results = median_ms(timings, runs)
    for name, ms in results.items():
        print(f"  {name:36s} {ms:8.2f} ms (median of {runs})")

    ref = results.get("elasticdeform.deform_random_grid")
    ours = results["augment_sample (all, default)"]
    speedup = ref / ours if ref is not None else float("nan")
    if ref is not None:
        print(
            f"  speedup vs elasticdeform: augment_sample {speedup:.1f}x, "
            f"elastic_deform {ref / results['elastic_deform']:.1f}x"
        )

    rms, centre_std = measured_sigma(129, args.seeds, sigma=10.0, grid=3)
    print(
        f"recovered displacement (sigma=10, {args.seeds} seeds, 3x3 grid): "
        f"RMS over grid nodes {rms:.2f} px, std at centre node {centre_std:.2f} px"
    )
    print(f"RESULT speedup={speedup:.2f} sigma_measured={rms:.2f}")


if __name__ == "__main__":
    main()
