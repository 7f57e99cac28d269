"""Sample data: a small stack of fluorescence nuclei with instance labels.

Four 256x256 crops of the Kaggle Data Science Bowl 2018 (stage1_train, with the
community's mask fixes), grayscale channel 0, with one id per nucleus. The data are
CC0 (public domain), so they ship inside the package under ``napari_unet/data``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
IMAGES_FILE = DATA_DIR / "nuclei_sample_images.tif"
LABELS_FILE = DATA_DIR / "nuclei_sample_labels.tif"

LayerDataTuple = tuple[np.ndarray, dict[str, Any], str]


def load_nuclei() -> tuple[np.ndarray, np.ndarray]:
    """Read the shipped nuclei sample.

    Returns
    -------
    images : numpy.ndarray
        ``(4, 256, 256)`` uint8 fluorescence images.
    labels : numpy.ndarray
        ``(4, 256, 256)`` uint16 instance labels (0 is background).
    """
    import tifffile

    images = tifffile.imread(IMAGES_FILE)
    labels = tifffile.imread(LABELS_FILE)
    return np.asarray(images), np.asarray(labels)


def nuclei_sample() -> list[LayerDataTuple]:
    """Return the nuclei sample as napari layer data: an Image and a Labels layer.

    Returns
    -------
    list of tuple
        ``[(images, {"name": "nuclei"}, "image"),
        (labels, {"name": "nuclei ground truth"}, "labels")]``.
    """
    images, labels = load_nuclei()
    credit = "Kaggle Data Science Bowl 2018 (stage1_train), CC0"
    image_meta = {
        "name": "nuclei",
        "colormap": "gray",
        "contrast_limits": (0, 255),
        "metadata": {"source": credit},
    }
    labels_meta = {
        "name": "nuclei ground truth",
        "opacity": 0.5,
        "visible": False,
        "metadata": {"source": credit},
    }
    return [(images, image_meta, "image"), (labels, labels_meta, "labels")]
