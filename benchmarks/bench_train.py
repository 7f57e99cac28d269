"""A default round on the shipped sample data: wall time, loss, effect, FLOP rate.

As in the GUI: the sample stack (4 x 256^2 fluorescence nuclei) is segmented by the shipped
nuclei starter, slice 0 is replaced by its ground truth (the user's correction), and one
default round (:func:`napari_unet.training.loop.finetune_round`, anchored on slices 1-3 as the dock
does) runs on it. Reported: the round's wall time (median of ``--repeats`` rounds), the
loss of the first and last 10 % of steps, the correction effort (objects to add, delete or
change) on slices 1-3 before and after, the self-check, and the training FLOP rate (one
step's forward and backward FLOPs, counted by torch, times steps per second) against this
machine's fp32 matmul rate measured in the same run. Last line:
``RESULT round_s=... steps=... loss_drop=... effort_before=... effort_after=...
flop_rate_gflops=... matmul_gflops=... flop_frac=...``
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from napari_unet._sample_data import load_nuclei
from napari_unet.inference.postprocess import labels_from_probabilities, postprocess_settings
from napari_unet.inference.predict import predict
from napari_unet.metrics import match_f1
from napari_unet.model_files import load_model
from napari_unet.training.loop import RoundConfig, finetune_round
from napari_unet.training.train import TrainEvent, weighted_loss


def matmul_gflops(n: int = 1024, repeats: int = 7) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    a @ b
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t0)
    return 2 * n**3 / float(np.median(times)) / 1e9


def step_flops(model, cfg: RoundConfig) -> float:
    t = cfg.train
    n = model.valid_input_size(t.tile + 2 * model.halo)
    x = torch.randn(t.batch_size, model.in_channels, n, n)
    m = model.train()
    with FlopCounterMode(display=False) as counter:
        out = m(x)
        tgt = torch.zeros(out.shape[0], *out.shape[2:], dtype=torch.long)
        weighted_loss(out, tgt, torch.ones(tgt.shape)).backward()
    m.zero_grad(set_to_none=True)
    m.eval()
    return float(counter.get_total_flops())


def effort(model, images, labels) -> int:
    pp = postprocess_settings(model)
    return int(sum(match_f1(t, labels_from_probabilities(
        predict(model, im, device="cpu", precision="fp32"), **pp))["effort"]
        for im, t in zip(images, labels, strict=True)))


def one_round(parent, images, labels):
    lab = np.zeros_like(labels)
    lab[0] = labels[0]
    cfg = RoundConfig()
    cfg.train.device = "cpu"
    gen = finetune_round(parent, images, lab, cfg, slices=[0], anchors=list(images[1:]))
    t_train, first = 0.0, None
    while True:
        try:
            ev = next(gen)
        except StopIteration as stop:
            return stop.value, t_train
        if isinstance(ev, TrainEvent):
            first = ev.elapsed if first is None else first
            t_train = ev.elapsed - first  # steps 2..n: the steady training rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    a = ap.parse_args()
    images, labels = load_nuclei()
    parent = load_model("nuclei-fluorescence")
    before = effort(parent, images[1:], labels[1:])
    walls, rates, mm = [], [], []
    flops = step_flops(load_model("nuclei-fluorescence"), RoundConfig())
    for _ in range(a.repeats):
        mm.append(matmul_gflops())
        res, t_train = one_round(parent, images, labels)
        walls.append(res.report.seconds)
        rates.append(flops * (res.report.steps - 1) / max(t_train, 1e-9) / 1e9)
    rep = res.report
    after = effort(res.model if res.accepted else parent, images[1:], labels[1:])
    after_new = effort(res.model, images[1:], labels[1:])
    drop = 1 - rep.loss_last / rep.loss_first
    print(f"round wall {np.median(walls):.1f} s (runs: {', '.join(f'{w:.1f}' for w in walls)}); "
          f"{rep.steps} steps; loss {rep.loss_first:.4f} -> {rep.loss_last:.4f} ({drop:.0%})")
    print(f"self-check: {rep.summary()}")
    print(f"effort on slices 1-3: {before} before, {after_new} after (trained version), "
          f"{after} with what the loop keeps")
    print(f"training {np.median(rates):.1f} GFLOP/s ({flops / 1e9:.2f} GFLOP a step) against "
          f"fp32 matmul {np.median(mm):.1f} GFLOP/s")
    print(f"RESULT round_s={np.median(walls):.1f} steps={rep.steps} loss_drop={drop:.2f} "
          f"effort_before={before} effort_after={after} flop_rate_gflops={np.median(rates):.1f} "
          f"matmul_gflops={np.median(mm):.1f} flop_frac={np.median(rates) / np.median(mm):.2f}")


if __name__ == "__main__":
    main()
