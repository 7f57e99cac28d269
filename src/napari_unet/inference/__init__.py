"""Inference: image arrays in, probabilities and instance labels out (no Qt).

``inputs`` reads user arrays as slices, ``tiling`` plans the overlap tiles, ``predict`` runs
them (``cpu_pool`` side by side on CPUs; ``largedata`` lazily over dask/zarr),
``postprocess`` turns probabilities into labels and ``segment`` is the Segment job.
"""
