"""Inference backends for a classifier: PyTorch (CPU or CUDA), or the same network in ONNX Runtime (CPU).

A backend turns a batch ``x`` (N, ...) into softmax probabilities (N, C) and penultimate features
(N, D); its ``name`` (``pytorch-cpu``, ``pytorch-cuda``, ``onnxruntime-cpu``) is recorded in every
result. `choose_backend` picks one per model: a model on a CUDA device runs in PyTorch there; on CPU
``"torch"``, ``"onnx"``, or ``"auto"``, which times both on this machine at the model's input size and
keeps the faster. ONNX Runtime is used only after a parity check: the exported graph must give
PyTorch's probabilities within `PARITY_TOLERANCE` on a fixed input, else PyTorch is used with a
warning. The exported graph, the parity result and the timing are cached on disk (`cache_dir`, keyed
by the weights, the input shape and the runtime versions), so a model is exported, checked and timed
once per machine, not once per study.

Threads come from ``torch.get_num_threads()`` (the process's CPU allowance); the batch size from
`default_batch_size`.
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
PARITY_TOLERANCE = 1e-4
"""Largest |ONNX Runtime - PyTorch| probability difference on the fixed input that allows ONNX Runtime."""
PARITY_BATCH = 2
PARITY_SEED = 1234
TIMING_BATCH = 4
TIMING_RUNS = 2
SLICES_PER_THREAD = 4
"""Default batch: enough slices per call to keep every thread busy, small enough for little memory."""


class Backend(Protocol):
    name: str

    def run(self, x: torch.Tensor, batch_size: int, rows: Sequence[int] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        """(probabilities (K, C), features (K, D)) of the ``rows`` of ``x`` (N, ...) (default: all N, in
        order), ``batch_size`` rows at a time; the rows are gathered a batch at a time, never copied
        out of ``x`` all at once."""
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
    """The model itself, on whatever device it lives (channels-last for 2D nets, denormals flushed)."""

    model: nn.Module

    @property
    def name(self) -> str:
        from covidct.models.inference import _model_device

        return f"pytorch-{_model_device(self.model).type}"

    def run(self, x: torch.Tensor, batch_size: int, rows: Sequence[int] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        from covidct.models.inference import predict_tensor

        return predict_tensor(self.model, x, batch_size, return_features=True, rows=rows)


@dataclass
class OnnxBackend:
    """An ONNX Runtime session of the exported classifier (CPU, ``threads`` intra-op threads)."""

    path: Path
    threads: int
    name: str = "onnxruntime-cpu"

    def run(self, x: torch.Tensor, batch_size: int, rows: Sequence[int] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
        from covidct.models.inference import batch_rows

        session = _session(str(self.path), self.threads)
        x = np.asarray(x, dtype=np.float32)  # may be a view whose channels share memory
        chunks = batch_rows(x.shape[0], batch_size, rows)
        batch = np.empty((len(chunks[0]), *x.shape[1:]), dtype=np.float32)  # one buffer
        probs, feats = [], []
        for chunk in chunks:
            for k, row in enumerate(chunk):  # row by row: fast on a broadcast view too (np.take is not)
                np.copyto(batch[k], x[row])
            p, f = session.run(None, {"input": batch[: len(chunk)]})
            probs.append(p)
            feats.append(f)
        return np.concatenate(probs), np.concatenate(feats)


@functools.lru_cache(maxsize=8)
def _session(path: str, threads: int):  # noqa: ANN202 - onnxruntime is optional
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # no memory pattern (one block planned per input shape): the arena alone reuses freed tensors, and
    # the first batch touches 268 MB instead of 444 MB at 512 px, batch 8; the same speed after it
    options.enable_mem_pattern = False
    # threads that wait by sleeping, not spinning: the lesion analysis runs beside the model on the same
    # cores (on 2 cores a study took ~0.2 s less CPU this way; a model alone ~2 % slower)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
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


def parity_error(model: nn.Module, onnx: OnnxBackend, input_shape: Sequence[int]) -> float:
    """Max |ONNX Runtime - PyTorch| over probabilities on a fixed seeded input (`PARITY_BATCH` x shape)."""
    x = torch.rand((PARITY_BATCH, *input_shape), generator=torch.Generator().manual_seed(PARITY_SEED))
    reference, _ = TorchBackend(model).run(x, PARITY_BATCH)
    probs, _ = onnx.run(x, PARITY_BATCH)
    return float(np.max(np.abs(probs.astype(np.float64) - reference.astype(np.float64))))


def checked_onnx(model: nn.Module, onnx: OnnxBackend, input_shape: Sequence[int]) -> bool:
    """Whether ``onnx`` passed the parity check (run once per exported graph; ``<key>-parity.json``).

    A failure warns (RuntimeWarning) with the difference found; the caller then uses PyTorch.
    """
    record = onnx.path.with_name(f"{onnx.path.stem}-parity.json")
    if record.is_file():
        result = json.loads(record.read_text())
    else:
        diff = parity_error(model, onnx, input_shape)
        result = {"max_abs_diff": diff, "tolerance": PARITY_TOLERANCE, "passed": diff <= PARITY_TOLERANCE}
        record.write_text(json.dumps(result))
    if not result["passed"]:
        warnings.warn(
            f"ONNX Runtime disagrees with PyTorch on {type(model).__name__} (max |diff| "
            f"{result['max_abs_diff']:.3g} > {PARITY_TOLERANCE:g} on the parity input; graph {onnx.path}); "
            "using PyTorch.", RuntimeWarning, stacklevel=3)
    return bool(result["passed"])


def choose_backend(
    model: nn.Module,
    input_shape: Sequence[int],
    backend: str = "auto",
    *,
    folder: Path | None = None,
    threads: int | None = None,
) -> Backend:
    """The backend to run ``model`` on inputs of ``input_shape`` (without batch).

    A model on a CUDA device runs in PyTorch on it. On CPU, ``"onnx"`` and ``"auto"`` export to ONNX
    (once) and check parity (`checked_onnx`; a failure falls back to PyTorch with a warning); ``"auto"``
    then times both backends on `TIMING_BATCH` random inputs (once per weights, shape, versions and
    thread count; the result is kept in ``<key>-<threads>t.json``) and returns the faster. Without
    onnxruntime, ``"auto"`` gives PyTorch.
    """
    from covidct.models.inference import _model_device

    if backend not in BACKENDS:
        raise ConfigError(f"Unknown inference backend {backend!r}; use one of {', '.join(BACKENDS)}.")
    if backend == "torch" or _model_device(model).type != "cpu":
        return TorchBackend(model)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        if backend == "onnx":
            from covidct.extras import require_extra

            require_extra("export", "onnxruntime", feature="The onnx inference backend")
        return TorchBackend(model)
    threads = threads or torch.get_num_threads()
    folder = folder or cache_dir()
    onnx = OnnxBackend(export_backend(model, input_shape, folder), threads)
    if not checked_onnx(model, onnx, input_shape):
        return TorchBackend(model)
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
