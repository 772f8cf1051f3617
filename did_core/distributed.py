"""torch.distributed for scoring jobs launched by `torchrun`: the rank and world size, gathering each
rank's chunk on rank 0 (the only writer), and barriers. Without torchrun everything is one process.

How a job shards: `chunked.run_chunks` hands chunk `round_start + rank` of each round to each rank.
"""

from __future__ import annotations

import os


def dist_rank_world(init: bool = True) -> tuple[int, int]:
    """(rank, world size): from torch.distributed when launched by torchrun (initialized here when
    `init` and not yet), else (0, 1)."""
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        import torch
        import torch.distributed as dist

        if not dist.is_initialized():
            if not init:
                return 0, 1
            dist.init_process_group(backend="nccl" if torch.cuda.is_available() else "gloo")
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def gather(result, rank: int, world: int) -> list:
    """Every rank's `result`, on rank 0 (other ranks get [])."""
    if world == 1:
        return [result]
    import torch.distributed as dist

    out = [None] * world if rank == 0 else None
    dist.gather_object(result, out, dst=0)
    return out or []


def barrier(world: int) -> None:
    if world > 1:
        import torch.distributed as dist

        dist.barrier()
