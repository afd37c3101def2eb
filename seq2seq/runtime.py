"""Where and how computation runs: device choice, CPU threads, seeding (several processes:
``seq2seq.training.distributed``)."""

from __future__ import annotations

import contextlib
import functools
import os
import random
import time
from collections.abc import Callable
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


def allowed_cores() -> list[int]:
    """The CPU cores this process may run on."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return list(range(os.cpu_count() or 1))


def configure_threads(num_threads: int = 0, processes: int = 1) -> int:
    """Use ``num_threads`` CPU threads, or with 0 the cores this process may run on, shared
    evenly by the ``processes`` that train on this machine. With 0 and one process the count
    then follows the machine's load: ``fit_threads`` (called by the training and decoding
    loops) gives back the cores that other processes keep busy, and takes them again when
    they are free. A count the caller set stays; for one process ``fit_threads`` then only
    says when other processes take cores those threads need (the run gets slower) and when
    they give them back. Several processes never take more than their share of the cores
    between them: a set count above it is lowered to the share (threads that outnumber the
    cores wait for each other at every operator)."""
    global _fitter
    _fitter = None
    cores = allowed_cores()
    follow = num_threads <= 0
    share = max(1, len(cores) // max(processes, 1))
    if follow or (processes > 1 and num_threads > share):
        num_threads = share
    if processes <= 1 and len(cores) > 1 and busy_cpu_seconds(cores) is not None:
        _fitter = ThreadFitter(cores, follow=follow)
    torch.set_num_threads(num_threads)
    return num_threads


def busy_cpu_seconds(cores: list[int]) -> float | None:
    """Seconds the ``cores`` have spent busy (any process) since boot, from /proc/stat;
    None where that cannot be read."""
    wanted = {f"cpu{core}" for core in cores}
    busy = 0
    try:
        with open("/proc/stat", encoding="ascii") as f:
            for line in f:
                name, *ticks = line.split()
                if name in wanted:  # user nice system idle iowait irq softirq steal ...
                    busy += sum(int(t) for t in ticks[:8]) - int(ticks[3]) - int(ticks[4])
    except (OSError, ValueError, IndexError):
        return None
    return busy / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU seconds this process (all its threads) has used."""
    times = os.times()
    return times.user + times.system


class ThreadFitter:
    """Keeps torch's CPU thread count at the cores other processes leave free.

    Threads of one operation wait for each other at every step; when another process holds
    one of their cores, all of them wait for the slowest. On 2 cores beside one busy process,
    2 threads trained the demo at 0.26-0.29x of its quiet speed and 1 thread at 0.63-0.70x
    (BENCHMARKS.md). Every ``every`` seconds this compares the cores' busy time with this
    process's own: the difference is what others use, and the thread count becomes the cores
    left, at least one. Another count changes the order of some sums, so results differ in
    the last bits, as on another CPU kind; a run that must repeat bit for bit (or resume
    bit-identically on a machine whose load changes) sets its thread count.

    With ``follow=False`` (a count the user set) the count stays: calls only report when
    other processes start to take cores the threads need, and when they stop.
    """

    def __init__(self, cores: list[int], every: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 busy: Callable[[list[int]], float | None] = busy_cpu_seconds,
                 own: Callable[[], float] = own_cpu_seconds, follow: bool = True) -> None:
        self.cores, self.every, self.follow = cores, every, follow
        self.clock, self.busy, self.own = clock, busy, own
        self.last = self._sample()
        self.others = 0.0  # cores used by other processes over the last interval
        self.crowded = False  # (follow=False) others hold cores the threads need

    def _sample(self) -> tuple[float, float, float]:
        return self.clock(), self.busy(self.cores) or 0.0, self.own()

    def __call__(self) -> str | None:
        """A line to log when the thread count (or, with a fixed count, whether other
        processes crowd it) changed, else None; cheap between samples."""
        if self.clock() - self.last[0] < self.every:
            return None
        now = self._sample()
        elapsed = now[0] - self.last[0]
        self.others = max(0.0, (now[1] - self.last[1]) - (now[2] - self.last[2])) / elapsed
        self.last = now
        left = len(self.cores) - round(self.others)  # cores the others leave free
        threads = torch.get_num_threads()
        used = f"other processes use {self.others:.1f} of {len(self.cores)} cores"
        if not self.follow:
            crowded = left < min(threads, len(self.cores))
            if crowded == self.crowded:
                return None
            self.crowded = crowded
            if crowded:
                return (f"{used}: this run keeps the {threads} thread{'s' if threads > 1 else ''} "
                        "it was given, so it runs slower, to the same result")
            return f"{used}: back to full speed"
        free = max(1, left)
        if free == threads:
            return None
        torch.set_num_threads(free)
        return f"{used}: computing on {free} thread{'s' if free > 1 else ''}"


_fitter: ThreadFitter | None = None


def fit_threads() -> str | None:
    """Follow the machine's load when ``configure_threads`` chose the count, or say when it
    crowds a count that was set (see there); returns a line to log when that changed."""
    return None if _fitter is None else _fitter()


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
        limit_onednn_kernels()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def limit_onednn_kernels() -> None:
    """Keep ``ONEDNN_CACHE_CAPACITY`` compiled oneDNN kernels (unless the user set a count):
    for a training process whose products run in oneDNN (bfloat16, or float32 with
    ``training.onednn``). oneDNN keeps a kernel for each new matrix shape (1,024 by default);
    batches of ever new lengths grew a bfloat16 training process by 1.7 GB in 1,600 steps, and
    a small cache costs training no measurable speed. Search keeps the default: its shapes
    (rows x source length) outnumber 16, and recompiling them cost it 10-20 % of its speed for
    ~70 MB saved. Read once, at oneDNN's first use."""
    os.environ.setdefault("ONEDNN_PRIMITIVE_CACHE_CAPACITY", str(ONEDNN_CACHE_CAPACITY))


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
