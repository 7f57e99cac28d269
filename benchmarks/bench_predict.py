"""Prediction speed: efficiency against this machine's matmul rate, and against a naive loop.

Default: base 16, depth 5, a 2048² image, CPU. ``efficiency`` is the fp32 path against the
fp32 matmul rate. ``vs_naive`` and ``slice512_s`` time the default precision (``"auto"``: bf16
on CPUs with AMX or AVX-512 BF16, fp32 elsewhere), whose own efficiency is reported against the matmul
rate of that dtype; ``vs_naive_fp32`` is the fp32 path against the same naive loop. Last line:
``RESULT efficiency=... vs_naive=... slice512_s=... precision=... efficiency_<dtype>=... vs_naive_fp32=...
parallel_tiles_x=...`` (the last: the fp32 path against itself with tiles one after another)

Each repeat times every path back to back between two matmul measurements (the higher one is
the reference); the figures are medians over the repeats of these per-repeat ratios, because
the host's load changes from one second to the next.
"""

from __future__ import annotations

import argparse
import statistics
import time
from unittest import mock

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_unet.devices import inference_dtype
from napari_unet.inference.predict import predict
from napari_unet.model import UNet


def once(fn, device: torch.device | None = None) -> float:
    """Seconds one call of ``fn`` takes (waiting for CUDA to finish)."""
    t0 = time.perf_counter()
    fn()
    if device is not None and device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def median_time(fn, repeats: int) -> float:
    return statistics.median(once(fn) for _ in range(repeats))


def matmul_rate(device: torch.device, n: int = 2048, dtype: torch.dtype = torch.float32) -> float:
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)

    def run() -> None:
        for _ in range(4):
            a @ b
        if device.type == "cuda":
            torch.cuda.synchronize()

    run()
    return 4 * 2 * n**3 / median_time(run, 5)


def flops_per_output_pixel(net: UNet, tile: int) -> float:
    x = torch.zeros(1, 1, tile, tile)
    with FlopCounterMode(display=False) as fc, torch.no_grad():
        y = net(x)
    return fc.get_total_flops() / (y.shape[-1] * y.shape[-2])


def naive_predict(net: UNet, img: np.ndarray, in_tile: int = 572) -> np.ndarray:
    """One paper-sized tile at a time, no batching, no channels_last: the baseline."""
    h = net.halo
    out = net.output_size(in_tile)
    H, W = img.shape
    ny, nx = -(-H // out), -(-W // out)
    padded = np.pad(img, ((h, ny * out - H + h), (h, nx * out - W + h)), mode="reflect")
    res = np.zeros((2, ny * out, nx * out), np.float32)
    with torch.no_grad():
        for i in range(ny):
            for j in range(nx):
                t = torch.from_numpy(padded[i * out : i * out + in_tile, j * out : j * out + in_tile])
                res[:, i * out : (i + 1) * out, j * out : (j + 1) * out] = torch.softmax(
                    net(t[None, None].float()), 1)[0].numpy()
    return res[:, :H, :W]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", type=int, default=2048)
    ap.add_argument("--base", type=int, default=16)
    ap.add_argument("--depth", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--repeats", type=int, default=5)
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    net = UNet(depth=a.depth, base_channels=a.base, normalization={"mode": "none"}).eval()
    img = np.random.default_rng(0).random((a.size, a.size)).astype(np.float32)
    auto = inference_dtype(dev, "auto")  # what users get: bf16 on fast-bf16 CPUs and on GPUs
    auto_name = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[auto]

    # the matmul rate moves by up to 1.5x between moments on a shared machine, and the host
    # may steal the CPU for seconds: every repeat times all the paths back to back, between
    # two matmul measurements, and the figures are medians of per-repeat ratios
    fpp = flops_per_output_pixel(net, net.valid_input_size(1024))
    useful = fpp * a.size * a.size
    precs = list(dict.fromkeys(["fp32", auto_name]))
    for prec in precs:
        predict(net, img[:512, :512], device=dev, precision=prec)  # warm-up

    runs = []
    for _ in range(a.repeats):
        r = {"rate32": matmul_rate(dev), "rate_auto": matmul_rate(dev, dtype=auto or torch.float32)}
        for prec in precs:
            r[prec] = once(lambda p=prec: predict(net, img, device=dev, precision=p), dev)
        with mock.patch("napari_unet.inference.predict.cpu_workers", return_value=1):  # one tile at a time
            r["serial"] = once(lambda: predict(net, img, device=dev, precision="fp32"), dev)
        r["naive"] = once(lambda: naive_predict(net.to(torch.device("cpu")), img)) \
            if dev.type == "cpu" else float("nan")
        net.to(dev)
        r["rate32"] = max(r["rate32"], matmul_rate(dev))  # the higher of before and after
        r["rate_auto"] = max(r["rate_auto"], matmul_rate(dev, dtype=auto or torch.float32))
        runs.append(r)

    def med(f) -> float:
        return statistics.median(f(r) for r in runs)

    eff32 = med(lambda r: useful / r["fp32"] / r["rate32"])
    eff_auto = med(lambda r: useful / r[auto_name] / r["rate_auto"])
    vs_naive, vs_naive32 = med(lambda r: r["naive"] / r[auto_name]), med(lambda r: r["naive"] / r["fp32"])
    par = med(lambda r: r["serial"] / r["fp32"])
    t512 = median_time(lambda: predict(net, img[:512, :512], device=dev), 5)
    print(f"threads={torch.get_num_threads()}; per repeat (s, GFLOP/s):")
    for r in runs:
        print("  " + "  ".join(f"{k}={v / 1e9 if k.startswith('rate') else v:.2f}" for k, v in r.items()))
    print(f"flops/output px={fpp / 1e6:.2f} MFLOP; useful work={useful / 1e9:.1f} GFLOP")
    print(f"medians over {a.repeats} repeats: fp32 efficiency {eff32:.3f}; {auto_name} (the default "
          f"here) efficiency against the {auto_name} matmul {eff_auto:.3f}; tiles side by side, one "
          f"thread each, vs one after another on all threads {par:.2f}x")
    print(f"RESULT efficiency={eff32:.3f} vs_naive={vs_naive:.2f} "
          f"slice512_s={t512:.3f} precision={auto_name} efficiency_{auto_name}={eff_auto:.3f} "
          f"vs_naive_fp32={vs_naive32:.2f} parallel_tiles_x={par:.2f}")

if __name__ == "__main__":
    main()
