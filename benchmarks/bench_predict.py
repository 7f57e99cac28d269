"""Prediction speed: efficiency against this machine's matmul rate, and against a naive loop.

Default: base 16, depth 5, a 2048² image, CPU. Last line:
``RESULT efficiency=... vs_naive=... slice512_s=...``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_unet.model import UNet
from napari_unet.predict import predict


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def matmul_rate(device: torch.device, n: int = 2048) -> float:
    a = torch.randn(n, n, device=device)
    b = torch.randn(n, n, device=device)

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
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    dev = torch.device(a.device)
    torch.manual_seed(0)
    net = UNet(depth=a.depth, base_channels=a.base, normalization={"mode": "none"}).eval()
    img = np.random.default_rng(0).random((a.size, a.size)).astype(np.float32)

    rate = matmul_rate(dev)
    fpp = flops_per_output_pixel(net, net.valid_input_size(1024))
    useful = fpp * a.size * a.size
    predict(net, img[:512, :512], device=dev)  # warm-up
    t_ours = median_time(lambda: predict(net, img, device=dev), a.repeats)
    eff = useful / t_ours / rate
    t_naive = median_time(lambda: naive_predict(net.to(torch.device("cpu")), img), 1) \
        if dev.type == "cpu" else float("nan")
    net.to(dev)
    t512 = median_time(lambda: predict(net, img[:512, :512], device=dev), 5)
    print(f"threads={torch.get_num_threads()} matmul={rate / 1e9:.1f} GFLOP/s")
    print(f"flops/output px={fpp / 1e6:.2f} MFLOP; useful work={useful / 1e9:.1f} GFLOP")
    print(f"ours {a.size}²: {t_ours:.2f} s (median of {a.repeats}); naive: {t_naive:.2f} s")
    print(f"RESULT efficiency={eff:.3f} vs_naive={t_naive / t_ours:.2f} slice512_s={t512:.3f}")


if __name__ == "__main__":
    main()
