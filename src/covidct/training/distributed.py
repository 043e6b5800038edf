"""Multi-process data-parallel training on one machine (gloo on CPU, nccl on CUDA).

``torchrun --nproc_per_node N -m covidct train --config ...`` works as is (the engine reads
RANK / WORLD_SIZE from the environment). `launch_ddp` does the same from Python, e.g. in tests.
"""

from __future__ import annotations

import os
import socket
from typing import Any

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from covidct.training.config import TrainConfig
from covidct.training.data import DataBundle
from covidct.training.engine import RunResult, train


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _worker(
    rank: int,
    world_size: int,
    port: int,
    config: TrainConfig,
    data: DataBundle | None,
    threads: int,
    queue: Any,
) -> None:
    os.environ.update(
        {
            "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": str(port),
            "RANK": str(rank),
            "LOCAL_RANK": str(rank),
            "WORLD_SIZE": str(world_size),
        }
    )
    torch.set_num_threads(threads)
    try:
        result = train(config, data)
        if rank == 0:
            queue.put(result.to_dict())
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def launch_ddp(
    config: TrainConfig, data: DataBundle | None = None, *, world_size: int = 2, threads_per_process: int = 1
) -> RunResult:
    """Run `train` in ``world_size`` spawned processes; returns rank 0's `RunResult`."""
    ctx = mp.get_context("spawn")
    queue = ctx.SimpleQueue()
    mp.start_processes(
        _worker,
        args=(world_size, free_port(), config, data, threads_per_process, queue),
        nprocs=world_size,
        join=True,
        start_method="spawn",
    )
    return RunResult(**queue.get())
