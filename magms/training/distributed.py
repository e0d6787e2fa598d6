"""Training under ``torchrun``: this process's rank, the collectives the loop needs, the tear-down.

Without torchrun (``WORLD_SIZE`` unset or 1) every method is a no-op and the run is rank 0 of 1,
so the trainer has a single code path.
"""

from __future__ import annotations

import logging
import os

import torch

__all__ = ["Ranks"]

logger = logging.getLogger(__name__)


class Ranks:
    """This process's place among the ranks of a run, and what they do together.

    Args:
        rank: this process's rank; 0 writes every file.
        world: number of ranks.
        device: this rank's device.
        created: whether the process group was created here (and so is destroyed here).
    """

    def __init__(self, rank: int, world: int, device: torch.device, created: bool) -> None:
        self.rank, self.world, self.device, self.created = rank, world, device, created

    @classmethod
    def from_environment(cls, device: torch.device) -> Ranks:
        """Join the process group torchrun describes in the environment, if any.

        On CUDA each rank takes the GPU of its ``LOCAL_RANK``; the backend is NCCL there, gloo on the CPU.

        Args:
            device: the resolved device of the run.
        """
        world = int(os.environ.get("WORLD_SIZE", "1"))
        if world <= 1:
            return cls(0, 1, device, False)
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        created = not torch.distributed.is_initialized()
        if created:
            torch.distributed.init_process_group("nccl" if device.type == "cuda" else "gloo")
        ranks = cls(torch.distributed.get_rank(), world, device, created)
        if ranks.is_main:
            logger.warning("distributed training: %d ranks (%s)", world, torch.distributed.get_backend())
        return ranks

    @property
    def is_main(self) -> bool:
        """Rank 0: the one that writes files and reports progress."""
        return self.rank == 0

    @property
    def is_distributed(self) -> bool:
        """More than one rank."""
        return self.world > 1

    def wrap(self, module: torch.nn.Module) -> torch.nn.Module:
        """``module`` under DDP when distributed, else itself."""
        if not self.is_distributed:
            return module
        # a modality absent from a rank's batch leaves its encoder without gradient there
        return torch.nn.parallel.DistributedDataParallel(
            module, device_ids=[self.device.index] if self.device.type == "cuda" else None, find_unused_parameters=True
        )

    def agree(self, *flags: bool) -> tuple[bool, ...]:
        """Each flag as True on every rank when it is True on any: all ranks then stop at the same step."""
        if not self.is_distributed:
            return flags
        values = torch.tensor([int(f) for f in flags], device=self.device)
        torch.distributed.all_reduce(values, op=torch.distributed.ReduceOp.MAX)
        return tuple(bool(v) for v in values)

    def barrier(self) -> None:
        """Wait for every rank."""
        if self.is_distributed:
            torch.distributed.barrier()

    def close(self) -> None:
        """Destroy the process group if it was created here (once)."""
        if self.created:
            torch.distributed.destroy_process_group()
            self.created = False
