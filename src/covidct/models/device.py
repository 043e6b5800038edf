"""The compute device of inference and training: ``cpu``, ``cuda`` or ``auto`` (CUDA when available)."""

from __future__ import annotations

import torch

from covidct.errors import ConfigError, UnknownNameError, unknown_name_message

DEVICES = ("cpu", "cuda", "auto")


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a visible GPU is a `ConfigError`.

    ``local_rank`` picks the GPU of a distributed worker (rank modulo the GPU count).
    """
    if name not in DEVICES:
        raise UnknownNameError(unknown_name_message("device", name, DEVICES))
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            build = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"--device cuda, but no CUDA GPU is visible (torch {torch.__version__} is {build}). "
                "Use --device cpu (or auto), or install a CUDA build of PyTorch on a machine with a GPU."
            )
        return torch.device("cuda", local_rank % max(1, torch.cuda.device_count()))
    return torch.device("cpu")
