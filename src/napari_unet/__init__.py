"""napari-unet: human-in-the-loop U-Net segmentation for napari."""

__version__ = "0.1.0"
