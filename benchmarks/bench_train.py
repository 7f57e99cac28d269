"""Training speed and a short learning curve on ISBI 2012.

Trains from scratch on slices 0-1 and measures the adapted Rand error on slices 10-19 as
training goes on: ``rand_err`` for the 4-connected components of the interior at the best
threshold (the definition of ../shared/data/README.md), ``rand_err_fill`` for the cells
grown from them (``fill``). Also reports steps/s and the fraction of each step spent in the
data pipeline (crop + augmentation + border weights). Last line:
``RESULT steps_per_s=... pipeline_frac=... rand_err=... rand_err_fill=...``
"""

from __future__ import annotations

import argparse
import time

import torch

import datasets
from napari_unet import train as train_mod
from napari_unet.metrics import evaluate_em
from napari_unet.model import UNet
from napari_unet.predict import predict
from napari_unet.train import TrainConfig, fine_tune


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--val-every", type=int, default=100)
    ap.add_argument("--tile", type=int, default=192)
    ap.add_argument("--device", default="cpu")
    a = ap.parse_args()
    train_img, train_lab = datasets.em(range(0, 2))
    test_img, test_lab = datasets.em(range(10, 20))

    pipeline = {"s": 0.0}
    orig_crop, orig_prep = train_mod._augmented_crop, train_mod.prepare_samples

    def timed(fn):
        def wrapper(*args, **kw):
            t0 = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                pipeline["s"] += time.perf_counter() - t0
        return wrapper

    train_mod._augmented_crop, train_mod.prepare_samples = timed(orig_crop), timed(orig_prep)

    last: dict = {"val_s": 0.0}

    def validate(model: UNet) -> float:
        t_val = time.perf_counter()
        prob = predict(model, test_img, device=a.device)[1]
        last.update(evaluate_em(test_lab, prob))
        last["val_s"] += time.perf_counter() - t_val
        return last["adapted_rand_error"]

    torch.manual_seed(0)
    model = UNet(**train_mod.DEFAULT_ARCHITECTURE)
    cfg = TrainConfig(steps=a.steps, optimizer="adam", lr=1e-3, tile=a.tile, device=a.device,
                      val_every=a.val_every)
    t0 = time.perf_counter()
    rand = float("nan")
    print("step  loss    rand_err(10-19)  rand_err_fill")
    for ev in fine_tune(model, list(train_img), list(train_lab), cfg, validate=validate):
        if ev.val_metric is not None:
            rand = ev.val_metric
            print(f"{ev.step:4d}  {ev.loss:.4f}  {rand:.4f}           "
                  f"{last['adapted_rand_error_fill']:.4f}", flush=True)
    total = time.perf_counter() - t0
    train_time = total - last["val_s"]  # validation time is excluded from the training rate
    train_mod._augmented_crop, train_mod.prepare_samples = orig_crop, orig_prep
    print(f"train time {train_time:.1f}s for {a.steps} steps; pipeline {pipeline['s']:.1f}s")
    print(f"RESULT steps_per_s={a.steps / train_time:.3f} "
          f"pipeline_frac={pipeline['s'] / train_time:.3f} rand_err={rand:.4f} "
          f"rand_err_fill={last['adapted_rand_error_fill']:.4f}")


if __name__ == "__main__":
    main()
