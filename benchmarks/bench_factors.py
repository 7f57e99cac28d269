"""Why rounds made models worse: each factor of a round, in turn, on two cases.

Cases: ``tissue`` (adapt_cases.py: dark textured nuclei on a bright background, given to
the fluorescence starter's dev twin; 1 corrected image, 8 test images, F1) and ``isbi``
(the EM dev twin in its own domain: ISBI slices 10-11 corrected, 13-19 scored, adapted
Rand error of the labels, without TTA to keep the study short). Each row is one
:class:`~napari_unet.training.loop.RoundConfig`: the old defaults, the new defaults, and the new
defaults with one factor put back to its old value. Last line:
``RESULT <case>_<row>=... ...``
"""

from __future__ import annotations

import argparse
import copy

import adapt_cases
import numpy as np
from bench_quality import TWINS

import datasets
from napari_unet.inference.postprocess import labels_from_probabilities, postprocess_settings
from napari_unet.inference.predict import predict, run
from napari_unet.metrics import adapted_rand, match_f1
from napari_unet.model_files import load_model
from napari_unet.training.augment import AugmentConfig
from napari_unet.training.loop import RoundConfig, finetune_round
from napari_unet.training.train import TrainConfig


def old_defaults() -> RoundConfig:
    """The round as it was: SGD 0.99 at 1e-3, 100 steps of one 256 px crop, no warm-up,
    the parent's polarity and thresholds, anchors whatever the parent's quality."""
    return RoundConfig(train=TrainConfig(steps=100, lr=1e-3, optimizer="sgd", warmup=0.0,
                                         tile=256, batch_size=1, weight_decay=0.0),
                       polarity="keep", retune=False, anchor_min_f1=0.0,
                       anchor_max_rand=1.0)


def rows() -> dict[str, RoundConfig]:
    new = RoundConfig()
    out = {"old": old_defaults(), "new": new}

    def vary(name: str, **kw) -> None:
        cfg = copy.deepcopy(new)
        for k, v in kw.items():
            target = cfg.train if hasattr(cfg.train, k) and not hasattr(cfg, k) else cfg
            setattr(target, k, v)
        out[name] = cfg

    vary("sgd", optimizer="sgd", lr=1e-3, weight_decay=0.0)
    vary("no_warmup", warmup=0.0)
    vary("steps100", steps=100)
    vary("tile256_b1", tile=256, batch_size=1)
    vary("no_polarity", polarity="keep")
    vary("no_retune", retune=False)
    vary("no_class_balance", class_balance=False)
    vary("w0_0", w0=0.0)
    vary("no_augment", augment=AugmentConfig(enabled=False))
    vary("always_anchor", anchor_min_f1=0.0, anchor_max_rand=1.0)
    vary("never_anchor", anchor_weight=0.0)
    vary("lr1e-3", lr=1e-3)
    vary("no_holdout", holdout=0.0)
    return out


def tissue():
    c = adapt_cases.build("tissue")
    free = c.pool_images[1:] + c.test_images
    return ("nuclei", "nuclei-fluorescence.pt", c.pool_images[:1], c.pool_labels[:1],
            c.test_images, c.test_labels, [free[i] for i in (0, 5, 10)])


def isbi():
    img, lab = datasets.em(range(10, 20))
    return ("em", "em-membranes.pt", list(img[:2]), list(lab[:2]), list(img[3:]),
            list(lab[3:]), [img[2], img[5], img[9]])


def score(kind, model, images, labels) -> float:
    pp = postprocess_settings(model)
    vals = []
    for im, t in zip(images, labels, strict=True):
        seg = labels_from_probabilities(predict(model, im, device="cpu", precision="fp32",
                                                tta=False), **pp)
        vals.append(match_f1(t, seg)["f1"] if kind == "nuclei" else adapted_rand(t, seg))
    return float(np.mean(vals))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--cases", default="tissue,isbi")
    ap.add_argument("--rows", default=",".join(rows()))
    a = ap.parse_args()
    results = {}
    for case in a.cases.split(","):
        kind, starter, imgs, labs, test_i, test_l, anchors = {"tissue": tissue, "isbi": isbi}[case]()
        parent = load_model(TWINS / starter)
        zero = score(kind, parent, test_i, test_l)
        print(f"\n{case}: zero-shot {zero:.3f} ({'F1' if kind == 'nuclei' else 'adapted Rand'})")
        print("row               test   self-check          accepted  loss first->last  steps  s")
        results[f"{case}_zero"] = zero
        for name in a.rows.split(","):
            cfg = copy.deepcopy(rows()[name])
            cfg.train.device = "cpu"
            res = run(finetune_round(parent, imgs, labs, cfg, anchors=anchors))
            r = res.report
            s = score(kind, res.model, test_i, test_l)
            results[f"{case}_{name}"] = s
            print(f"{name:16s} {s:6.3f}   {r.parent_score:.3f} -> {r.new_score:.3f}   "
                  f"{str(res.accepted):8s}  {r.loss_first:.3f} -> {r.loss_last:.3f}     "
                  f"{r.steps:4d}  {r.seconds:4.0f}", flush=True)
    print("\nRESULT " + " ".join(f"{k}={v:.3f}" for k, v in results.items()))


if __name__ == "__main__":
    main()
