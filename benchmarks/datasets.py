"""The development data in ../shared/data and the fixed splits used by the starter models
and the benchmarks. Test images are in no training set, the starter models' included."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tifffile
from skimage.measure import label as cc_label

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"

# DSB2018 fluorescence: (stack, indices)
NUCLEI_TRAIN = {"fluo_520x696": range(0, 30), "fluo_256": range(0, 170)}
# The simulated expert corrects images of one kind (median nucleus ~550-700 px, 100-200
# nuclei per image) and the loop is scored on held-out images of that same kind, as a user
# would annotate and then segment one experiment. Images 30-44 are in no starter training.
NUCLEI_ROUNDS = {"fluo_520x696": [31, 35, 37]}
NUCLEI_TEST = {"fluo_520x696": range(35, 45), "fluo_256": range(170, 200)}
NUCLEI_LOOP_TEST = {"fluo_520x696": [36, 38, 40, 41, 43, 44]}

# Everything in ../shared/data: the shipped models are trained on it (the issue asks for
# "both sets" and "slices 0-19"); their dev twins in benchmarks/models/ (same recipe, the
# splits above and below only) are what the quality benchmark scores on held-out data.
NUCLEI_ALL = {"fluo_520x696": range(0, 45), "fluo_256": range(0, 200)}

# ISBI 2012 EM slices
EM_ALL = range(0, 20)
EM_TRAIN = range(0, 10)
EM_ROUNDS = range(10, 13)
EM_TEST = range(13, 20)


def available() -> bool:
    return (DATA / "dsb2018").is_dir() and (DATA / "isbi2012").is_dir()


def _stack(name: str) -> tuple[np.ndarray, np.ndarray]:
    d = DATA / "dsb2018"
    return (tifffile.imread(d / f"{name}_images.tif"), tifffile.imread(d / f"{name}_labels.tif"))


def nuclei(split: dict) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Lists of (image, instance labels) for a split."""
    images, labels = [], []
    for name, idx in split.items():
        img, lab = _stack(name)
        images += [img[i] for i in idx]
        labels += [lab[i] for i in idx]
    return images, labels


def em(indices: range) -> tuple[np.ndarray, np.ndarray]:
    """(images, instance labels = 4-connected components of the interior) for slices."""
    d = DATA / "isbi2012"
    img = tifffile.imread(d / "images.tif")[list(indices)]
    lab = tifffile.imread(d / "labels.tif")[list(indices)]
    inst = np.stack([cc_label(s > 0, connectivity=1) for s in lab]).astype(np.int32)
    return img, inst
