"""Run-time plumbing of the engine: devices, seeding, distributed setup, run folder files."""

from __future__ import annotations

import csv
import json
import os
import platform
import random
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

from covidct.models.device import resolve_device  # noqa: F401 - engine.py calls runtime.resolve_device

SEED_STRIDE = 1_000_003
"""Separates per-epoch seeds of different base seeds."""


@dataclass(frozen=True)
class DistInfo:
    """Process rank and world size (1 / 0 outside ``torchrun``)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def init_distributed(device: torch.device) -> DistInfo:
    """Join the process group set up by ``torchrun`` (env WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", str(rank)))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, rank=rank, world_size=world)
    return DistInfo(rank=rank, world_size=world, local_rank=local)


def flag(mode: str, device: torch.device) -> bool:
    """Resolve an ``auto``/``on``/``off`` switch: ``auto`` means on for CUDA only."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def seed_everything(seed: int, epoch: int = 0) -> None:
    """Seed python, numpy and torch from (seed, epoch): each epoch starts from a known state."""
    value = (int(seed) * SEED_STRIDE + int(epoch)) % (2**32)
    random.seed(value)
    np.random.seed(value)
    torch.manual_seed(value)


def rng_state() -> dict[str, Any]:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_state(state: dict[str, Any]) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])


def code_version() -> str:
    """``git describe --always --dirty`` of the source tree, else the installed covidct version."""
    try:
        out = subprocess.run(
            ["git", "describe", "--always", "--dirty", "--tags"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        if out.returncode == 0 and out.stdout.strip():
            return out.stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("covidct")
    except PackageNotFoundError:  # pragma: no cover
        return "unknown"


def environment(device: torch.device, dist_info: DistInfo) -> dict[str, Any]:
    """Versions and hardware of this run (written to env.json)."""
    env = {
        "python": platform.python_version(),
        "torch": str(torch.__version__),
        "platform": platform.platform(),
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": str(device),
        "world_size": dist_info.world_size,
        "code_version": code_version(),
    }
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def write_json(path: Path, payload: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, default=str))


def write_metrics_csv(path: Path, history: list[dict[str, Any]]) -> None:
    """Rewrite metrics.csv from the whole history (a resumed run drops partial epochs)."""
    if not history:
        return
    keys: list[str] = []
    for row in history:
        keys.extend(k for k in row if k not in keys)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=keys)
        writer.writeheader()
        writer.writerows(history)


def atomic_save(payload: Any, path: Path) -> None:
    """torch.save to a temporary file then rename, so a crash never leaves a half-written file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)


class TensorBoardLog:
    """Scalars to TensorBoard event files under ``log_dir`` (no-op when tensorboard is missing)."""

    def __init__(self, log_dir: Path) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:  # pragma: no cover
            self.writer = None
        else:
            self.writer = SummaryWriter(log_dir=str(log_dir))

    def log(self, row: dict[str, Any], step: int) -> None:
        if self.writer is None:
            return
        for key, value in row.items():
            if isinstance(value, int | float) and key != "epoch":
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
