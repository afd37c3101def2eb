"""Where and how computation runs: device choice, CPU threads, seeding, process rank."""

from __future__ import annotations

import os
import random
from dataclasses import dataclass

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


def configure_threads(num_threads: int = 0) -> int:
    """Use ``num_threads`` CPU threads (0 = every core this process may run on)."""
    if num_threads <= 0:
        try:
            num_threads = len(os.sched_getaffinity(0))
        except AttributeError:  # not on Linux
            num_threads = os.cpu_count() or 1
    torch.set_num_threads(num_threads)
    return num_threads


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in a (possibly torchrun-launched) group; rank 0 writes the files."""

    rank: int = 0
    world_size: int = 1

    @classmethod
    def from_environment(cls) -> "ProcessInfo":
        return cls(rank=int(os.environ.get("RANK", 0)),
                   world_size=int(os.environ.get("WORLD_SIZE", 1)))

    @property
    def is_main(self) -> bool:
        return self.rank == 0
