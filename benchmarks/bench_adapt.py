"""Adaptation to new kinds of data: the loop's rounds on shifted cases (adapt_cases.py).

For each case a simulated user corrects 1, 2 and 4 images of the pool (ground truth), and
one default round (:func:`napari_unet.training.loop.finetune_round`, the dock's and the CLI's)
starts each time from the dev-twin starter. Scored on the case's test images, which no
round sees (their gray values only anchor, as uncorrected slices of the user's stack do):
nuclei F1 at IoU 0.5, EM adapted Rand error of the labels; also on the corrected images
themselves (``<case>_own_k<k>``, zero-shot ``<case>_own_zero_k<k>``). Rows per case: zero-shot, each
k (the trained version, and what the loop keeps: the parent when the self-check rejects;
with ``--rotations R``, the mean over R orders of the pool, the k-sets nested in each),
from scratch (k = 4), the random forest trained on the same k images (the same orders: the
protocol's peer, ``../shared/EVALUATION.md``) and Otsu + distance watershed. Predictions
are scored at the CLI's precision (``--precision auto``: bf16 on GPUs and fast-bf16 CPUs).

Last line: ``RESULT <case>_k<k>=... <case>_forest_k<k>=... <case>_zero=... worse_rounds=N
flagged=M below_forest=B ...`` (B: the case and k pairs whose mean trails the forest's).
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import adapt_cases
import numpy as np
from bench_quality import TWINS, ForestPeer, otsu_watershed

from napari_unet.inference.postprocess import labels_from_probabilities, postprocess_settings
from napari_unet.inference.predict import predict, run
from napari_unet.metrics import adapted_rand, evaluate_em, match_f1
from napari_unet.model_files import load_model
from napari_unet.training.loop import RoundConfig, finetune_round

PRECISION = ["auto"]  # what ``napari-unet predict --device cpu`` uses (the protocol)


def segment(model, image: np.ndarray) -> np.ndarray:
    return labels_from_probabilities(predict(model, image, device="cpu", precision=PRECISION[0]),
                                     **postprocess_settings(model))


def score(case, labels_of, images=None, truths=None) -> float:
    """The case's metric of ``labels_of`` on its test images (or on ``images``, ``truths``)."""
    images = case.test_images if images is None else images
    truths = case.test_labels if truths is None else truths
    preds = [labels_of(im) for im in images]
    if case.kind == "nuclei":
        return float(np.mean([match_f1(t, p)["f1"] for t, p in zip(truths, preds, strict=True)]))
    return float(np.mean([adapted_rand(t, p) for t, p in zip(truths, preds, strict=True)]))


def run_round(parent, case, k: int, cfg: RoundConfig):
    free = case.pool_images[k:] + case.test_images
    anchors = [free[int(round(i))] for i in np.linspace(0, len(free) - 1, 3)]
    return run(finetune_round(parent, list(case.pool_images[:k]), list(case.pool_labels[:k]),
                              cfg, anchors=anchors))


def forest_score(case, k: int) -> float:
    """The random forest peer trained on the first ``k`` pool images, scored on the test."""
    forest, rng = ForestPeer(), np.random.default_rng(0)
    for im, lab in zip(case.pool_images[:k], case.pool_labels[:k], strict=True):
        fg = lab > 0
        if case.kind == "em":
            fg = lab > 0
        forest.add(im, fg, rng)
    if case.kind == "em":
        return float(np.mean([evaluate_em(t, forest.prob(i))["adapted_rand_error"]
                              for i, t in zip(case.test_images, case.test_labels, strict=True)]))
    from skimage.measure import label as cc_label

    return score(case, lambda im: cc_label(forest.prob(im) > 0.5, connectivity=1))


def rotated(case, shift: int):
    """``case`` with its pool rolled by ``shift``: another first image, the sets still nested."""
    return dataclasses.replace(
        case, pool_images=case.pool_images[shift:] + case.pool_images[:shift],
        pool_labels=case.pool_labels[shift:] + case.pool_labels[:shift])


def round_config(settings: list[str]) -> RoundConfig:
    """The defaults with ``FIELD=VALUE`` settings (values as Python literals, else strings).

    A dotted field sets a nested config: ``train.tile=256``.
    """
    import ast

    cfg = RoundConfig()
    for item in settings:
        key, _, text = item.partition("=")
        try:
            value = ast.literal_eval(text)
        except (ValueError, SyntaxError):
            value = text
        *outer, last = key.split(".")
        holder = cfg
        for name in outer:
            holder = getattr(holder, name)
        if not hasattr(holder, last):
            raise SystemExit(f"bench_adapt: no setting {key!r}")
        setattr(holder, last, value)
    cfg.__post_init__()
    return cfg


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default=",".join(adapt_cases.NUCLEI_CASES + adapt_cases.EM_CASES))
    ap.add_argument("--ks", default="1,2,4")
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--rotations", type=int, default=1,
                    help="average each k over this many orders of the pool (rolled, so the "
                         "k-sets stay nested): which image comes first weighs as much as k")
    ap.add_argument("--set", action="append", default=[], metavar="FIELD=VALUE",
                    help="a RoundConfig field for every round (a variant to compare with the "
                         "defaults), e.g. --set regime_input=polarity")
    ap.add_argument("--precision", default="auto",
                    help="prediction precision of the scoring (auto: as the CLI's predict)")
    a = ap.parse_args()
    PRECISION[0] = a.precision
    variant = round_config(a.set)
    ks = [int(k) for k in a.ks.split(",")]
    results, worse, flagged, rounds, secs, below = {}, 0, 0, 0, [], 0
    for name in a.cases.split(","):
        case = adapt_cases.build(name)
        parent = load_model(TWINS / case.starter)
        better = (lambda x, y: x > y) if case.kind == "nuclei" else (lambda x, y: x < y)
        zero = score(case, lambda im, m=parent: segment(m, im))
        results[f"{name}_zero"] = zero
        print(f"\n{name} ({case.kind}; {'F1' if case.kind == 'nuclei' else 'adapted Rand'}): "
              f"zero-shot {zero:.3f}")
        print("   k  rot  trained  kept   self-check (parent -> new)       steps  wall_s  loss drop")
        n_pool = len(case.pool_images)
        for k in ks:
            trained, kept, forests, own, own_zero = [], [], [], [], []
            for r in range(a.rotations if k < n_pool else 1):
                order = rotated(case, r * n_pool // a.rotations)
                res = run_round(parent, order, k, variant)
                if not a.no_peers:
                    forests.append(forest_score(order, k))
                rep = res.report
                s = score(case, lambda im, m=res.model: segment(m, im))
                corrected = (order.pool_images[:k], order.pool_labels[:k])
                own.append(score(case, lambda im, m=res.model: segment(m, im), *corrected))
                own_zero.append(score(case, lambda im, m=parent: segment(m, im), *corrected))
                trained.append(s)
                kept.append(s if res.accepted else zero)
                rounds += 1
                secs.append(rep.seconds)
                got_worse = better(zero, s) and abs(s - zero) > 0.01
                worse += int(got_worse)
                flagged += int(got_worse and not res.accepted)
                drop = 1 - rep.loss_last / max(rep.loss_first, 1e-9)
                print(f"{k:4d}  {r:3d}  {s:7.3f}  {kept[-1]:5.3f}  {rep.parent_score:.3f} -> "
                      f"{rep.new_score:.3f} {'accepted' if res.accepted else 'REJECTED'}"
                      f" {rep.regime}{' inv' if rep.inverted else ''}"
                      f"{f' x{rep.scale:g}' if rep.rescaled else ''}"
                      f"{f' s{rep.smooth:g}' if rep.smoothed else ''}"
                      f"{' untrained' if getattr(rep, 'untrained', False) else ''}"
                      f"  {rep.steps:5d}  {rep.seconds:6.1f}  {drop:8.2f}", flush=True)
            if len(trained) > 1:
                print(f"{k:4d} mean  {np.mean(trained):7.3f}  {np.mean(kept):5.3f}")
            print(f"{k:4d} on the corrected images themselves: {np.mean(own):.3f} (zero-shot "
                  f"{np.mean(own_zero):.3f})")
            results[f"{name}_k{k}"] = float(np.mean(trained))
            results[f"{name}_kept_k{k}"] = float(np.mean(kept))
            results[f"{name}_own_k{k}"] = float(np.mean(own))  # the corrected images
            results[f"{name}_own_zero_k{k}"] = float(np.mean(own_zero))
            if forests:
                fr = float(np.mean(forests))
                results[f"{name}_forest_k{k}"] = fr
                below += int(better(fr, results[f"{name}_k{k}"]))
                print(f"{k:4d} forest on the same images: {fr:.3f}")
        if not a.no_peers:
            t0 = time.perf_counter()
            scratch = run_round(parent, case, max(ks), RoundConfig(start="scratch"))
            sc = score(case, lambda im, m=scratch.model: segment(m, im))
            print(f"scratch k={max(ks)}: {sc:.3f}", end="")
            results[f"{name}_scratch"] = sc
            if case.kind == "nuclei":
                ot = score(case, otsu_watershed) if np.mean(case.test_images[0]) < 128 else \
                    score(case, lambda im: otsu_watershed(255 - im))
                results[f"{name}_otsu_ws"] = ot
                print(f"   Otsu+watershed: {ot:.3f}", end="")
            print(f"   ({time.perf_counter() - t0:.0f} s)")
    line = " ".join(f"{k}={v:.3f}" for k, v in results.items())
    print(f"\nRESULT {line} worse_rounds={worse} flagged={flagged}/{worse} rounds={rounds} "
          f"below_forest={below} rotations={a.rotations} "
          f"round_s_median={np.median(secs):.1f}")


if __name__ == "__main__":
    main()
