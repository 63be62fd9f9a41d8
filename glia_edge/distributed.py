"""Just enough torch.distributed for ``torchrun --nproc_per_node N -m glia_edge train ...``.

torchrun sets ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK`` and the rendezvous address; the same
command without it runs as a single process. The process group uses NCCL on GPUs and Gloo on
CPUs. Only rank 0 writes files; the others wait at barriers.
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)


def resolve_device(device: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> this process's GPU if there is one, else the CPU; ``cuda`` picks the local rank's GPU."""
    name = device.lower()
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            raise RuntimeError("--device cuda was asked for but PyTorch sees no CUDA GPU here")
        return torch.device("cuda", local_rank % torch.cuda.device_count())
    return torch.device(name)


@dataclass
class DistContext:
    """This process's place in the job (rank 0 of 1 when not distributed)."""

    device: torch.device
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def setup(cls, device: str = "auto") -> "DistContext":
        world = int(os.environ.get("WORLD_SIZE", "1"))
        rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
        dev = resolve_device(device, local_rank)
        if rank != 0:  # one voice: the other ranks only report errors
            logging.getLogger("glia_edge").setLevel(logging.ERROR)
        if world > 1 and not dist.is_initialized():
            backend = "nccl" if dev.type == "cuda" else "gloo"
            if dev.type == "cuda":
                torch.cuda.set_device(dev)
            dist.init_process_group(backend=backend)
            log.info("distributed: rank %d of %d on %s (%s)", rank, world, dev, backend)
        return cls(device=dev, rank=rank, world_size=world, local_rank=local_rank)

    def barrier(self) -> None:
        if self.enabled:
            dist.barrier()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order (a one-element list when not distributed)."""
        if not self.enabled:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def average_bn_stats(self, model: torch.nn.Module) -> None:
        """Average BatchNorm running statistics over ranks (each rank saw its own batches).

        DDP broadcasts rank 0's buffers before each forward, but the last forward of an epoch
        leaves every rank with its own statistics; evaluation and checkpoints need one set.
        """
        if self.enabled:
            from timm.utils import distribute_bn

            distribute_bn(model, self.world_size, reduce=True)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
