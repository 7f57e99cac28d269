"""bioimage.io model packages (spec 0.5), in and out (no Qt).

``export`` writes them with the torch-only ``arch``, ``load`` reads them back and
``runtime`` predicts with foreign ones.
"""
