"""Where and how computation runs: device choice, CPU threads, seeding (several processes:
``seq2seq.training.distributed``)."""

from __future__ import annotations

import contextlib
import functools
import os
import random
from typing import Any

import numpy as np
import torch

from .errors import UserError


def select_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cpu``, ``cuda``, ``cuda:N`` as given."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"--device {name!r} is not valid (auto, cpu, cuda, cuda:N)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine")
    return device


def configure_threads(num_threads: int = 0, processes: int = 1) -> int:
    """Use ``num_threads`` CPU threads (0 = the cores this process may run on, shared
    evenly by the ``processes`` that train on this machine)."""
    if num_threads <= 0:
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            cores = os.cpu_count() or 1
        num_threads = max(1, cores // max(processes, 1))
    torch.set_num_threads(num_threads)
    return num_threads


ONEDNN_CACHE_CAPACITY = 16  # compiled bfloat16 kernels kept in training (see mixed_precision)


@functools.lru_cache(maxsize=1)
def cpu_bf16_hardware() -> bool | None:
    """Whether this CPU multiplies bfloat16 in hardware (x86: AVX512-BF16 or AMX; Arm: BF16),
    None where /proc/cpuinfo cannot tell. Elsewhere bf16 autocast still works, but emulated,
    and is slower than float32. Having the hardware does not make bfloat16 faster for a given
    model: ``auto`` measures that (``seq2seq.precision``)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            flags = next((line for line in f if line.startswith(("flags", "Features"))), None)
    except OSError:
        return None
    if flags is None:
        return None
    names = flags.split(":", 1)[-1].split()
    return "avx512_bf16" in names or "amx_bf16" in names or "bf16" in names


def cpu_has_native_bf16() -> bool:
    return cpu_bf16_hardware() is True


def mixed_precision(device: torch.device, enabled: bool, training: bool = False
                    ) -> contextlib.AbstractContextManager[Any]:
    """The autocast context for ``device``: float16 on CUDA, bfloat16 on CPU; a no-op when off.
    ``enabled`` is a resolved switch: a config's ``auto`` is decided per model by
    ``seq2seq.precision.resolve_mixed_precision`` first.

    Weights, optimizer state and the loss stay float32; matrix products run in the low precision.
    """
    if not isinstance(enabled, bool):
        raise TypeError(f"mixed_precision takes True or False, not {enabled!r}: resolve 'auto' "
                        "with seq2seq.precision.resolve_mixed_precision")
    if not enabled:
        return contextlib.nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.float16)
    if training:
        # oneDNN runs the bfloat16 products and keeps a compiled kernel for each new matrix
        # shape (1,024 by default); batches of ever new lengths grew a training process by
        # 1.7 GB in 1,600 steps, and a small cache costs training no measurable speed. Search
        # keeps the default: its shapes (rows x source length) outnumber 16, and recompiling
        # them cost it 10-20 % of its speed for ~70 MB saved. Read once, at oneDNN's first use.
        os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))
    return torch.autocast(device.type, dtype=torch.bfloat16)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
