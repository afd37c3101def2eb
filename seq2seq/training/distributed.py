"""Training on several processes: torchrun's environment, the process group, the device each
process takes, and the few collective operations the trainer needs.

With one process every operation here is a no-op that returns its input, so the trainer and
the tasks read the same whether one process trains or many. With several, launched by
``torchrun``, gradients are averaged by ``DistributedDataParallel`` (see the trainer) and
everything else that must agree between processes (when to stop, the validation score, the
precision choice) is decided once and shared through these helpers.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.rendezvous import rendezvous

from ..errors import DistributedError, UserError

# How long a collective waits for the other processes (gloo/NCCL timeout). Long enough for
# rank 0 to build a large corpus's cache or to validate while the others wait; a process that
# dies closes its connections, so the others learn of it at once, not after this.
TIMEOUT = timedelta(minutes=int(os.environ.get("SEQ2SEQ_DISTRIBUTED_TIMEOUT_MINUTES", "60")))

_ENVIRONMENT = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


@dataclass(frozen=True)
class ProcessInfo:
    """This process's place in a torchrun-launched job; rank 0 writes the run directory."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0  # this process's index on its machine: its GPU
    local_world_size: int = 1  # processes on this machine
    restart: int = 0  # torchrun's restart count (--max-restarts): > 0 after a failure

    @classmethod
    def from_environment(cls) -> ProcessInfo:
        """Read torchrun's variables (a plain ``python -m seq2seq`` is rank 0 of 1)."""
        values = {}
        for name in (*_ENVIRONMENT, "TORCHELASTIC_RESTART_COUNT"):
            text = os.environ.get(name)
            if text is None:
                continue
            try:
                values[name] = int(text)
            except ValueError:
                raise UserError(f"environment variable {name}={text!r} is not an integer "
                                "(torchrun sets it; unset it to train on one process)") from None
        world = values.get("WORLD_SIZE", 1)
        info = cls(rank=values.get("RANK", 0), world_size=world,
                   local_rank=values.get("LOCAL_RANK", 0),
                   local_world_size=values.get("LOCAL_WORLD_SIZE", 1 if world == 1 else world),
                   restart=values.get("TORCHELASTIC_RESTART_COUNT", 0))
        if world < 1 or not 0 <= info.rank < world:
            raise UserError(f"RANK={info.rank} and WORLD_SIZE={world} do not make a valid "
                            "process group (0 <= RANK < WORLD_SIZE)")
        if world > 1 and not {"MASTER_ADDR", "MASTER_PORT"} <= os.environ.keys():
            raise UserError(f"WORLD_SIZE={world} but MASTER_ADDR/MASTER_PORT are not set: "
                            "launch several processes with torchrun (docs/distributed.md)")
        return info

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    # ---- collectives: each is a no-op for one process ----

    def all_sum(self, values: list[float]) -> list[float]:
        """The element-wise sum of ``values`` over all processes."""
        if not self.distributed:
            return values
        tensor = torch.tensor(values, dtype=torch.float64, device=_communication_device())
        _collective(dist.all_reduce, tensor, op=dist.ReduceOp.SUM)
        return tensor.tolist()

    def all_max(self, *values: int) -> list[int]:
        """Each of ``values``, the largest over all processes (one collective for all)."""
        if not self.distributed:
            return list(values)
        tensor = torch.tensor(values, dtype=torch.int64, device=_communication_device())
        _collective(dist.all_reduce, tensor, op=dist.ReduceOp.MAX)
        return [int(v) for v in tensor.tolist()]

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every process (picklable objects: small ones only)."""
        if not self.distributed:
            return obj
        box = [obj]
        _collective(dist.broadcast_object_list, box, src=0)
        return box[0]

    def all_gather(self, obj: Any) -> list[Any]:
        """Every process's ``obj``, in rank order, on every process."""
        if not self.distributed:
            return [obj]
        boxes: list[Any] = [None] * self.world_size
        _collective(dist.all_gather_object, boxes, obj)
        return boxes

    def barrier(self) -> None:
        if self.distributed:
            _collective(dist.barrier)


def _communication_device() -> torch.device:
    """NCCL moves CUDA tensors only; gloo CPU tensors."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _collective(operation: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
    try:
        operation(*args, **kwargs)
    except (RuntimeError, dist.DistError) as err:  # a peer died, or the network broke
        raise DistributedError(f"rank {dist.get_rank()}: the process group broke ({_first_line(err)}): "
                               "another process of the job stopped or cannot be reached") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def process_device(name: str, process: ProcessInfo) -> torch.device:
    """The device of this process: ``auto`` is CUDA when present; with several processes on a
    machine each takes the GPU of its LOCAL_RANK (choose GPUs with CUDA_VISIBLE_DEVICES)."""
    from ..runtime import select_device

    if not process.distributed:
        return select_device(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda:"):
        raise UserError(f"--device {name}: with several processes each takes the GPU of its "
                        "LOCAL_RANK; give --device cuda and choose the GPUs with "
                        "CUDA_VISIBLE_DEVICES")
    device = select_device(name)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if process.local_world_size > count:
            raise UserError(f"{process.local_world_size} processes on this machine but "
                            f"{count} CUDA device{'s' if count != 1 else ''}: one GPU per "
                            "process (torchrun --nproc_per_node at most the GPU count, or "
                            "--device cpu)")
        device = torch.device("cuda", process.local_rank)
        torch.cuda.set_device(device)
    return device


@contextlib.contextmanager
def process_group(process: ProcessInfo, device: torch.device) -> Iterator[None]:
    """Join the job's process group (gloo on CPU, NCCL on CUDA) for the duration of training."""
    if not process.distributed:
        yield
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    try:
        # torchrun's store outlives a restart: the keys of each attempt get their own prefix,
        # or the processes of a restarted job would look up the addresses of the dead ones.
        store, _, _ = next(rendezvous("env://", process.rank, process.world_size, timeout=TIMEOUT))
        dist.init_process_group(backend, rank=process.rank, world_size=process.world_size,
                                store=dist.PrefixStore(  # type: ignore[attr-defined]
                                    f"seq2seq/attempt_{process.restart}", store),
                                timeout=TIMEOUT,
                                device_id=device if device.type == "cuda" else None)
    except (RuntimeError, ValueError, dist.DistError) as err:
        where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
        raise DistributedError(f"rank {process.rank}: cannot join the {backend} process group "
                               f"of {process.world_size} at {where}: {_first_line(err)}") from None
    try:
        yield
    finally:
        dist.destroy_process_group()


def rank_seed(seed: int, rank: int) -> int:
    """A seed for this rank's random numbers (dropout), different on each rank and derived
    from the config's seed, so a job is reproducible and ranks do not draw the same masks."""
    import numpy as np

    return int(np.random.SeedSequence([seed, rank]).generate_state(1)[0])
