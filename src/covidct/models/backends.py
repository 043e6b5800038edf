"""CPU inference backends for a classifier: PyTorch, or the same network exported to ONNX Runtime.

A backend turns a batch ``x`` (N, ...) into softmax probabilities (N, C) and penultimate features
(N, D). `choose_backend` picks one per model: ``"torch"``, ``"onnx"``, or ``"auto"``, which times
both on this machine at the model's input size and keeps the faster. The exported graph and the
timing are cached on disk (`cache_dir`, keyed by the weights, the input shape and the runtime
versions), so a model is exported and timed once per machine, not once per study.

Threads come from ``torch.get_num_threads()`` (the process's CPU allowance); the batch size from
`default_batch_size`. ONNX Runtime probabilities equal PyTorch's within 1e-4 (tests/models).
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch import nn

from covidct.errors import ConfigError

BACKENDS = ("torch", "onnx", "auto")
BACKEND_ENV = "COVIDCT_BACKEND"
"""Backend of the service (`Predictor`) when none is given; unset means ``"auto"``."""
CACHE_ENV = "COVIDCT_CACHE"
DEFAULT_CACHE = Path.home() / ".cache" / "covidct" / "backends"
OPSET = 17
TIMING_BATCH = 4
TIMING_RUNS = 2
SLICES_PER_THREAD = 4
"""Default batch: enough slices per call to keep every thread busy, small enough for little memory."""


class Backend(Protocol):
    name: str

    def run(self, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (N, C), features (N, D)) of a batch ``x`` (N, ...), ``batch_size`` at a time."""
        ...


def default_batch_size(threads: int | None = None) -> int:
    """Slices per forward pass on CPU: `SLICES_PER_THREAD` per thread."""
    return SLICES_PER_THREAD * max(1, threads or torch.get_num_threads())


def default_backend() -> str:
    """``$COVIDCT_BACKEND`` or ``"auto"`` (the test suite sets ``torch`` to skip exports)."""
    return os.environ.get(BACKEND_ENV, "auto")


def cache_dir() -> Path:
    """Where exported graphs and timings live: ``$COVIDCT_CACHE`` or ~/.cache/covidct/backends."""
    return Path(os.environ.get(CACHE_ENV, DEFAULT_CACHE))


class _ProbsAndFeatures(nn.Module):
    """The classifier as one graph with two outputs: softmax probabilities and pre-logit features."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        from covidct.models.inference import _pre_logits as pre_logits

        features = self.model.forward_features(x)
        logits = self.model.forward_head(features)
        return torch.softmax(logits.float(), dim=1), pre_logits(self.model, features).float()


@dataclass
class TorchBackend:
    """The model itself (channels-last for 2D nets, denormals flushed)."""

    model: nn.Module
    name: str = "torch"

    def run(self, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        from covidct.models.inference import predict_tensor

        return predict_tensor(self.model, x, batch_size, return_features=True)


@dataclass
class OnnxBackend:
    """An ONNX Runtime session of the exported classifier (CPU, ``threads`` intra-op threads)."""

    path: Path
    threads: int
    name: str = "onnx"

    def run(self, x: torch.Tensor, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        session = _session(str(self.path), self.threads)
        x = np.ascontiguousarray(np.asarray(x, dtype=np.float32))
        probs, feats = [], []
        for start in range(0, x.shape[0], batch_size):
            p, f = session.run(None, {"input": x[start : start + batch_size]})
            probs.append(p)
            feats.append(f)
        return np.concatenate(probs), np.concatenate(feats)


@functools.lru_cache(maxsize=8)
def _session(path: str, threads: int):  # noqa: ANN202 - onnxruntime is optional
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.set_denormal_as_zero", "1")
    return ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])


def model_key(model: nn.Module, input_shape: Sequence[int]) -> str:
    """Hash of the weights, the input shape and the torch / onnxruntime versions."""
    import onnxruntime as ort

    digest = hashlib.sha1()
    digest.update(
        f"{type(model).__name__}|{tuple(input_shape)}|{torch.__version__}|{ort.__version__}".encode()
    )
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()[:16]


def export_backend(model: nn.Module, input_shape: Sequence[int], folder: Path) -> Path:
    """Export ``model`` (probabilities + features, dynamic batch) to ``folder/<key>.onnx`` once."""
    from covidct.models.export import _prepare_for_export

    path = folder / f"{model_key(model, input_shape)}.onnx"
    if path.is_file():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    model = model.cpu().eval()
    _prepare_for_export(model)
    x = torch.rand((1, *input_shape), generator=torch.Generator().manual_seed(0))
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            _ProbsAndFeatures(model),
            (x,),
            str(tmp),
            input_names=["input"],
            output_names=["probs", "features"],
            dynamic_axes={"input": {0: "batch"}, "probs": {0: "batch"}, "features": {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )
    tmp.replace(path)
    return path


def _seconds_per_batch(backend: Backend, x: torch.Tensor) -> float:
    backend.run(x, x.shape[0])  # warm-up (first-call allocations, graph optimisation)
    times = []
    for _ in range(TIMING_RUNS):
        start = time.perf_counter()
        backend.run(x, x.shape[0])
        times.append(time.perf_counter() - start)
    return min(times)


def choose_backend(
    model: nn.Module,
    input_shape: Sequence[int],
    backend: str = "auto",
    *,
    folder: Path | None = None,
    threads: int | None = None,
) -> Backend:
    """The backend to run ``model`` on inputs of ``input_shape`` (without batch).

    ``"auto"`` exports to ONNX (once), times both backends on `TIMING_BATCH` random inputs (once
    per weights, shape, versions and thread count; the result is kept in ``<key>.json``) and
    returns the faster. Without onnxruntime, ``"auto"`` gives PyTorch.
    """
    if backend not in BACKENDS:
        raise ConfigError(f"Unknown inference backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    if backend == "torch":
        return TorchBackend(model)
    try:
        import onnxruntime  # noqa: F401
    except ImportError as exc:
        if backend == "onnx":
            raise ConfigError("The onnx backend needs onnxruntime: pip install 'covidct[export]'.") from exc
        return TorchBackend(model)
    threads = threads or torch.get_num_threads()
    folder = folder or cache_dir()
    onnx = OnnxBackend(export_backend(model, input_shape, folder), threads)
    if backend == "onnx":
        return onnx
    record = onnx.path.with_name(f"{onnx.path.stem}-{threads}t.json")
    if record.is_file():
        choice = json.loads(record.read_text())
    else:
        x = torch.rand((TIMING_BATCH, *input_shape), generator=torch.Generator().manual_seed(0))
        choice = {
            "torch_s": _seconds_per_batch(TorchBackend(model), x),
            "onnx_s": _seconds_per_batch(onnx, x),
        }
        choice.update(
            batch=TIMING_BATCH,
            threads=threads,
            faster="onnx" if choice["onnx_s"] < choice["torch_s"] else "torch",
        )
        record.write_text(json.dumps(choice))
    return onnx if choice["faster"] == "onnx" else TorchBackend(model)
