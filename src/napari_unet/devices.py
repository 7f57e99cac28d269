"""Device selection and mixed-precision settings shared by prediction and training."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator

import torch
from torch import nn

_PREPARE_LOCK = threading.Lock()


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """Return the torch device to use.

    Parameters
    ----------
    device : str or torch.device
        ``"auto"`` picks CUDA, then MPS, then CPU. Any explicit choice is honoured and
        checked for availability.

    Returns
    -------
    torch.device
        The device.

    Raises
    ------
    ValueError
        If an explicitly requested device is not available.
    """
    if isinstance(device, torch.device):
        return device
    name = (device or "auto").lower()
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ValueError("device 'mps' was requested but MPS is not available")
    if name.split(":")[0] not in ("cpu", "cuda", "mps"):
        raise ValueError(f"unknown device {device!r}; use auto, cpu, cuda or mps")
    return torch.device(name)


PRECISIONS = ("auto", "fp32", "bf16", "fp16")
_DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 convolutions natively, faster than fp32.

    AMX tiles (Intel Sapphire Rapids and later) or the AVX-512 BF16 instructions (Intel
    Cooper Lake, AMD Zen 4 and later): on an AMD EPYC with AVX-512 BF16 and no AMX a
    prediction takes half the time of fp32 and a training step of the EM starter 0.6 of it
    (docs/benchmarks.md, session 21).
    """
    for name in ("_is_amx_tile_supported", "_is_avx512_bf16_supported"):
        check = getattr(torch.cpu, name, None)
        try:
            if check is not None and check():
                return True
        except Exception:  # noqa: BLE001 - an unusual build is simply treated as "no"
            continue
    return False


def inference_dtype(device: torch.device, precision: str = "auto") -> torch.dtype | None:
    """The reduced-precision dtype for inference on ``device``, or None for fp32.

    Parameters
    ----------
    device : torch.device
        Where the network runs.
    precision : str
        ``"auto"``: bf16 (or fp16) autocast on GPUs, bf16 on CPUs with AMX units or AVX-512
        BF16 (about 2x faster there; the starter models' scores are unchanged, see
        docs/benchmarks.md), fp32 elsewhere. ``"fp32"``, ``"bf16"`` or ``"fp16"`` are honoured as given.

    Returns
    -------
    torch.dtype or None
        The dtype, or None for plain fp32.

    Raises
    ------
    ValueError
        For an unknown ``precision``.
    """
    name = (precision or "auto").lower()
    if name not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; use one of {', '.join(PRECISIONS)}")
    if name != "auto":
        return _DTYPES[name]
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return amp_dtype(device)


def precision_name(dtype: torch.dtype | None) -> str:
    """``"fp32"``, ``"bf16"`` or ``"fp16"`` for an :func:`inference_dtype` result."""
    return {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(dtype, "fp32")  # type: ignore[arg-type]


def training_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype for training: :func:`amp_dtype` on GPUs, bf16 on fast-bf16 CPUs.

    On CPUs with AMX units or AVX-512 BF16 (:func:`cpu_has_fast_bf16`) a bf16-autocast
    training step of the starter architectures is about 1.5x faster than fp32 (weights,
    optimiser state and the loss stay fp32).
    """
    if device.type == "cpu":
        return torch.bfloat16 if cpu_has_fast_bf16() else None
    return amp_dtype(device)


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """Autocast dtype for ``device``: bf16 on CUDA where supported, else fp16; None on CPU."""
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "mps":
        return torch.float16
    return None


@contextlib.contextmanager
def autocast(
    device: torch.device, enabled: bool = True, dtype: torch.dtype | None = None
) -> Iterator[None]:
    """Autocast to ``dtype`` (default :func:`amp_dtype`) on GPUs; a no-op on CPU or when disabled."""
    dtype = (dtype or amp_dtype(device)) if enabled and device.type != "cpu" else None
    if dtype is None:
        yield
        return
    with torch.autocast(device_type=device.type, dtype=dtype):
        yield


def is_oom(err: BaseException) -> bool:
    """Whether ``err`` is an out-of-memory error: an accelerator's or the CPU allocator's."""
    if isinstance(err, (torch.cuda.OutOfMemoryError, MemoryError)):
        return True
    text = str(err).lower()
    return isinstance(err, RuntimeError) and ("out of memory" in text
                                              or "can't allocate memory" in text)


def empty_cache(device: torch.device) -> None:
    """Release cached accelerator memory (after an out-of-memory error)."""
    if device.type == "cuda":
        torch.cuda.empty_cache()
    elif device.type == "mps":
        torch.mps.empty_cache()


def _on(t: torch.Tensor, device: torch.device) -> bool:
    return t.device.type == device.type and device.index in (None, t.device.index)


def prepare_for_inference(model: nn.Module, device: torch.device) -> nn.Module:
    """Put ``model`` on ``device``, in eval mode and channels_last, once; return it.

    The conversion happens in place, under a lock, and only when something is left to do,
    so a model already prepared is never touched again. Converting a module swaps the
    storage and strides of its parameters (``param.data = ...``), and a thread running a
    forward pass on it at that moment can read new strides over old storage: dask's
    threads predicting chunks with one shared model gave wrong probabilities that way.

    Parameters
    ----------
    model : torch.nn.Module
        The caller's model; modified in place.
    device : torch.device
        Target device.

    Returns
    -------
    torch.nn.Module
        ``model`` itself.
    """
    with _PREPARE_LOCK:
        tensors = [*model.parameters(), *model.buffers()]
        ready = not model.training and all(
            _on(t, device) and (t.dim() != 4 or t.is_contiguous(memory_format=torch.channels_last))
            for t in tensors)
        if not ready:
            model.to(device).eval().to(memory_format=torch.channels_last)
    return model
