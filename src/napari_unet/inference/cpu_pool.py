"""Tiles in parallel on CPUs: one single-threaded worker per core instead of one multi-threaded op.

The early layers of a U-Net have few channels (16, 32): oneDNN splits such a convolution
over the cores with little work per core, and the elementwise steps between convolutions
(ReLU, pooling, concatenation) are memory-bound. Running independent tiles side by side,
each on one core, keeps every core busy with its own data and no synchronisation:
about 1.2x the throughput of one tile at a time on 2 threads (base 16, 884 px tiles;
``benchmarks/bench_predict.py``).

Torch's intra-op thread count is a process-wide default that each thread copies once, on
first use. The pool's threads set it to 1 for themselves when they start; the caller's
count is restored right after, so other threads (training, the GUI) keep theirs.
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import torch

_POOLS: dict[int, ThreadPoolExecutor] = {}
_LOCK = threading.Lock()


def _single_threaded() -> None:
    torch.set_num_threads(1)
    torch.get_num_threads()  # fixes this thread's own count now (torch reads it lazily)


def cpu_workers(device: torch.device, n_tasks: int, memory_budget: int, bytes_per_task: int) -> int:
    """How many tiles to run side by side: one per intra-op thread, within the memory budget.

    Parameters
    ----------
    device : torch.device
        Only CPUs use workers; other devices get 1 (their batches are already parallel).
    n_tasks : int
        Independent tasks (tile batches) to run.
    memory_budget, bytes_per_task : int
        Activation memory allowed in all, and needed by one task.

    Returns
    -------
    int
        At least 1.
    """
    if device.type != "cpu":
        return 1
    by_memory = memory_budget // max(1, bytes_per_task)
    return int(max(1, min(torch.get_num_threads(), n_tasks, by_memory)))


def tile_pool(n: int) -> ThreadPoolExecutor:
    """A process-wide pool of ``n`` threads, each running torch ops on one thread.

    Created on first use and kept: its idle threads cost nothing, and reusing them keeps
    the caller's thread count untouched after the first call.
    """
    with _LOCK:
        pool = _POOLS.get(n)
        if pool is not None:
            return pool
        saved = torch.get_num_threads()
        pool = ThreadPoolExecutor(n, thread_name_prefix="napari-unet-tile",
                                  initializer=_single_threaded)
        started = threading.Barrier(n + 1)
        for _ in range(n):  # every task blocks until all n threads exist and are set up
            pool.submit(started.wait)
        started.wait()
        torch.set_num_threads(saved)  # the process default and this thread: as they were
        _POOLS[n] = pool
        return pool
