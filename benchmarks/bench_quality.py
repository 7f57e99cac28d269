"""Human-in-the-loop quality: a simulated expert corrects, the model fine-tunes, repeat.

Per round: predict the next unseen image (nuclei) or slice (EM) with the current model,
count the correction effort (objects to add, delete or change: unmatched truth plus
unmatched predictions at IoU >= 0.5) and differing pixels, "correct" it by taking the
ground truth, run one default round on all corrected images so far
(:func:`napari_unet.training.loop.finetune_round`; the loop keeps the new version only when its
self-check beats the parent, as the dock does), and score
the held-apart test split (benchmarks/datasets.py). Peers run
in the same process on the same images: a random forest on multiscale features (the
ilastik/APOC/convpaint approach) trained on the same corrected images, and Otsu.
The models scored are the starter models' dev twins (benchmarks/models/): the shipped
recipe (scripts/train_starter_models.py --data dev) trained on the training splits only,
so that no test image was in any training set; the shipped models are the same recipe
trained on all of ../shared/data. Predictions run in fp32 so that the scores do not depend
on the CPU (``precision="auto"`` would use bf16 on AMX CPUs; the starter models' scores
move by < 0.002 there).

Last line: ``RESULT nuclei_f1_r0=... nuclei_f1_r3=... em_rand_r0=... em_rand_r2=... effort_drop=...
... em_rand_comp_r0=... em_rand_comp_r2=...`` (em_rand: the labels a user gets; em_rand_comp:
the components of the interior probability, the definition of ../shared/data/README.md)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
from scipy import ndimage as ndi
from skimage.feature import multiscale_basic_features, peak_local_max
from skimage.filters import threshold_otsu
from skimage.measure import label as cc_label
from skimage.segmentation import watershed

import datasets
from napari_unet.inference.postprocess import labels_from_probabilities, postprocess_settings
from napari_unet.inference.predict import predict, run
from napari_unet.metrics import evaluate_em, match_f1
from napari_unet.model_files import load_model
from napari_unet.normalize import Normalization
from napari_unet.training.loop import RoundConfig, finetune_round
from napari_unet.training.pairs import pick_slices

# dev twins of the shipped models: same recipe, trained without the test splits
TWINS = Path(__file__).resolve().parent / "models"


def one_round(model, images, labels, anchors):
    """One default round (the dock's and the CLI's); returns what the loop keeps and the
    round's report: the new version when its self-check beat the parent, else the parent."""
    res = run(finetune_round(model, images, labels, RoundConfig(), anchors=anchors))
    return (res.model if res.accepted else model), res.report


def seg_nuclei(model, image: np.ndarray) -> np.ndarray:
    return labels_from_probabilities(predict(model, image, device="cpu", precision="fp32"),
                                     **postprocess_settings(model))


def f1_mean(truths, preds) -> float:
    return float(np.mean([match_f1(t, p)["f1"] for t, p in zip(truths, preds, strict=True)]))


def effort(truth: np.ndarray, pred: np.ndarray) -> tuple[int, int]:
    m = match_f1(truth, pred)
    return m["effort"], int(((truth > 0) != (pred > 0)).sum())


# --- peers --------------------------------------------------------------------------------
def rf_features(image: np.ndarray) -> np.ndarray:
    x = Normalization()(image)
    return multiscale_basic_features(x, intensity=True, edges=True, texture=True,
                                     sigma_min=1, sigma_max=16)


class ForestPeer:
    """Random forest on multiscale features, retrained on all corrected images each round."""

    def __init__(self) -> None:
        self.X, self.y = [], []
        self.clf = None

    def add(self, image: np.ndarray, fg: np.ndarray, rng: np.random.Generator, n: int = 20000):
        f = rf_features(image)
        f = f.reshape(-1, f.shape[-1])
        idx = rng.choice(f.shape[0], size=min(n, f.shape[0]), replace=False)
        self.X.append(f[idx])
        self.y.append(fg.reshape(-1)[idx].astype(np.uint8))
        from sklearn.ensemble import RandomForestClassifier

        self.clf = RandomForestClassifier(n_estimators=50, max_depth=12, n_jobs=2, random_state=0)
        self.clf.fit(np.concatenate(self.X), np.concatenate(self.y))

    def prob(self, image: np.ndarray) -> np.ndarray:
        f = rf_features(image)
        return self.clf.predict_proba(f.reshape(-1, f.shape[-1]))[:, 1].reshape(image.shape)


def otsu_cc(image: np.ndarray) -> np.ndarray:
    return cc_label(image > threshold_otsu(image), connectivity=1)


def otsu_watershed(image: np.ndarray) -> np.ndarray:
    mask = image > threshold_otsu(image)
    dist = ndi.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=5, labels=cc_label(mask), exclude_border=False)
    markers = np.zeros(image.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    return watershed(-dist, markers, mask=mask)


# --- the two experiments -------------------------------------------------------------------
def nuclei_rounds(rounds: int) -> dict:
    model = load_model(TWINS / "nuclei-fluorescence.pt")
    all_img, all_lab = datasets.nuclei(datasets.NUCLEI_TEST)
    zero_shot_all = f1_mean(all_lab, [seg_nuclei(model, im) for im in all_img])
    print(f"\nNUCLEI  starter zero-shot F1 on the whole test split ({len(all_img)} images, "
          f"both image sizes): {zero_shot_all:.3f}")
    # the loop is measured on the user's own kind of images: the pool of images the expert
    # corrects and the test images come from the same (held-out) part of fluo_520x696
    test_img, test_lab = datasets.nuclei(datasets.NUCLEI_LOOP_TEST)
    pool_img, pool_lab = datasets.nuclei(datasets.NUCLEI_ROUNDS)
    rng = np.random.default_rng(0)
    forest = ForestPeer()
    print(f"loop: corrects fluo_520x696 {datasets.NUCLEI_ROUNDS['fluo_520x696']}, scores "
          f"{datasets.NUCLEI_LOOP_TEST['fluo_520x696']}; one default round each")
    print(f"Otsu+CC F1 {f1_mean(test_lab, [otsu_cc(i) for i in test_img]):.3f}   "
          f"Otsu+watershed F1 {f1_mean(test_lab, [otsu_watershed(i) for i in test_img]):.3f}")
    print("round  effort(next img)  px_diff  test_effort/img  unet_F1  forest_F1  steps")
    done_img, done_lab, out = [], [], {}
    for r in range(rounds + 1):
        preds = [seg_nuclei(model, im) for im in test_img]
        f1 = f1_mean(test_lab, preds)
        test_eff = float(np.mean([effort(t, p)[0] for t, p in zip(test_lab, preds, strict=True)]))
        forest_f1 = float("nan")
        if forest.clf is not None:
            forest_f1 = f1_mean(test_lab, [cc_label(forest.prob(i) > 0.5, connectivity=1)
                                           for i in test_img])
        nxt_eff, nxt_px = float("nan"), float("nan")
        if r < rounds:
            nxt_eff, nxt_px = effort(pool_lab[r], seg_nuclei(model, pool_img[r]))
            done_img.append(pool_img[r])
            done_lab.append(pool_lab[r])
            forest.add(pool_img[r], pool_lab[r] > 0, rng)
        print(f"{r:5d}  {nxt_eff:16}  {nxt_px:7}  {test_eff:15.1f}  {f1:7.3f}  {forest_f1:9.3f}")
        out[r] = {"f1": f1, "effort": test_eff, "forest_f1": forest_f1, "zero_shot_all": zero_shot_all}
        if r < rounds:
            # as the Fine-tune dock does for a stack of the user's images (the pool, then the
            # test images): 3 uncorrected ones (images only) anchor the fine-tuning
            stack = pool_img + test_img
            free = [stack[z] for z in pick_slices(len(stack), range(len(done_img)))]
            model, rep = one_round(model, done_img, done_lab, free)
            print(f"       ({rep.steps} steps in {rep.seconds:.0f} s on {len(done_img)} corrected "
                  f"images; self-check {rep.summary()})")
    return out


def em_rounds(rounds: int) -> dict:
    model = load_model(TWINS / "em-membranes.pt")
    test_img, test_lab = datasets.em(datasets.EM_TEST)
    pool_img, pool_lab = datasets.em(datasets.EM_ROUNDS)
    rng = np.random.default_rng(0)
    forest = ForestPeer()
    print(f"\nEM  test: slices {list(datasets.EM_TEST)}; one default round each")
    print("unet_labels: the labels a user gets (the model's stored post-processing, seeds grown\n"
          "into cells); *_comp: the 4-connected components of the interior probability at the\n"
          "best threshold 0.1-0.9, as ../shared/data/README.md and the ISBI challenge score;\n"
          "*_fill: the best seed threshold 0.3-0.9, grown into cells")
    print("round  unet_labels  unet_comp  unet_fill  unet_pixel_err  forest_comp  forest_fill  "
          "forest_pixel_err")
    done_img, done_lab, out = [], [], {}
    nan = float("nan")
    for r in range(rounds + 1):
        prob = predict(model, test_img, device="cpu", precision="fp32")
        seg = labels_from_probabilities(prob, **postprocess_settings(model))
        s = evaluate_em(test_lab, prob[1])
        rand = evaluate_em(test_lab, seg)["adapted_rand_error"]
        fr = {"adapted_rand_error": nan, "adapted_rand_error_fill": nan, "pixel_error": nan}
        if forest.clf is not None:
            fr = evaluate_em(test_lab, np.stack([forest.prob(i) for i in test_img]))
        print(f"{r:5d}  {rand:11.4f}  {s['adapted_rand_error']:9.4f}  "
              f"{s['adapted_rand_error_fill']:9.4f}  {s['pixel_error']:14.4f}  "
              f"{fr['adapted_rand_error']:11.4f}  {fr['adapted_rand_error_fill']:11.4f}  "
              f"{fr['pixel_error']:16.4f}")
        out[r] = {"rand": rand, "rand_comp": s["adapted_rand_error"],
                  "rand_fill": s["adapted_rand_error_fill"], "pixel": s["pixel_error"],
                  "forest_rand": fr["adapted_rand_error"]}
        if r < rounds:
            done_img.append(pool_img[r])
            done_lab.append(pool_lab[r])
            forest.add(pool_img[r], pool_lab[r] > 0, rng)
            # the user's stack is slices 10-19 (the pool, then the test slices); as in the
            # Fine-tune dock, 3 uncorrected ones (images only) anchor the fine-tuning and
            # then recalibrate the seed threshold against the starter's seeds
            stack = np.concatenate([pool_img, test_img])
            free = [stack[z] for z in pick_slices(len(stack), range(len(done_img)))]
            model, rep = one_round(model, list(done_img), list(done_lab), free)
            print(f"       ({rep.steps} steps in {rep.seconds:.0f} s on {len(done_img)} corrected "
                  f"slices; self-check {rep.summary()})")
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--parts", default="nuclei,em", help="nuclei, em or both (the RESULT line "
                    "needs both)")
    a = ap.parse_args()
    t0 = time.time()
    parts = a.parts.split(",")
    nuc = nuclei_rounds(a.rounds) if "nuclei" in parts else None
    em = em_rounds(a.rounds) if "em" in parts else None
    if nuc is None or em is None:
        return
    drop = 1 - nuc[a.rounds]["effort"] / max(nuc[0]["effort"], 1e-9)
    print(f"\nwall {time.time() - t0:.0f}s")
    print(f"RESULT nuclei_f1_r0={nuc[0]['f1']:.3f} nuclei_f1_r3={nuc[min(3, a.rounds)]['f1']:.3f} "
          f"em_rand_r0={em[0]['rand']:.4f} em_rand_r2={em[min(2, a.rounds)]['rand']:.4f} "
          f"effort_drop={drop:.2f} nuclei_f1_zeroshot_all={nuc[0]['zero_shot_all']:.3f} "
          f"em_rand_comp_r0={em[0]['rand_comp']:.4f} em_rand_comp_r2={em[min(2, a.rounds)]['rand_comp']:.4f}")


if __name__ == "__main__":
    main()
