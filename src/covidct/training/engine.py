"""The one training engine: every model and paper recipe runs through `train`.

Run folder (``config.out_dir``)::

    config.yaml        resolved configuration
    env.json           python / torch versions, CPU / GPU, code version (git describe)
    data.json          counts per split / class / source
    metrics.csv        one row per epoch (also TensorBoard events under tb/)
    last.ckpt          model + optimiser + scheduler + epoch + RNG states + best metric (resume)
    best.ckpt          covidct checkpoint (weights + recipe + class names + provenance)
    predictions_val.csv / predictions_test.csv   for covidct.evaluation
    model_card.md / model_card.json              classifiers: data, split, recipe, machine, calibration
    result.json        `RunResult`
"""

from __future__ import annotations

import contextlib
import csv
import inspect
import math
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, Dataset, Sampler

from covidct.errors import CheckpointError, ConfigError, TrainingError
from covidct.evaluation.metrics import binary_auc, roc_auc_ovr
from covidct.training import runtime
from covidct.training.config import TrainConfig
from covidct.training.data import DataBundle, build_data
from covidct.training.source_adversary import ADVERSARY_LR_SCALE, build_adversary, ramp, training_sources
from covidct.training.splits import balance_by_repetition

LAST_CKPT = "last.ckpt"
BEST_CKPT = "best.ckpt"
RESUME_FORMAT = 1
OOM_MARKERS = ("out of memory", "can't allocate memory", "not enough memory")


@dataclass
class RunResult:
    """Outcome of `train`."""

    out_dir: str
    epochs_run: int
    best_epoch: int | None
    best_metric: float | None
    metric: str
    stopped_early: bool
    history: list[dict[str, Any]]
    best_checkpoint: str | None
    last_checkpoint: str | None
    predictions: dict[str, str] = field(default_factory=dict)
    final_metrics: dict[str, float] = field(default_factory=dict)
    """Metrics of the best checkpoint on the val and test sets."""
    wall_time_s: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ------------------------------------------------------------------------------- sampler
class EpochSampler(Sampler[int]):
    """Seeded per-epoch permutation of ``indices``, strided over DDP ranks.

    Rank ``r`` of ``w`` takes ``perm[r::w]`` (padded to a multiple of ``w``), so the union of the
    ranks' k-th micro-batches is the single-process k-th batch: DDP and one process see the same
    global batches.
    """

    def __init__(
        self, indices: Sequence[int], *, seed: int, shuffle: bool, rank: int = 0, world_size: int = 1
    ) -> None:
        self.indices = list(indices)
        self.seed, self.shuffle, self.rank, self.world_size = seed, shuffle, rank, world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def _order(self) -> list[int]:
        if not self.shuffle:
            return list(self.indices)
        gen = torch.Generator().manual_seed(int(self.seed) * runtime.SEED_STRIDE + self.epoch)
        return [self.indices[i] for i in torch.randperm(len(self.indices), generator=gen).tolist()]

    def __iter__(self) -> Iterator[int]:
        order = self._order()
        pad = (-len(order)) % self.world_size
        order = order + order[:pad]
        return iter(order[self.rank :: self.world_size])

    def __len__(self) -> int:
        return math.ceil(len(self.indices) / self.world_size)


# ----------------------------------------------------------------------------- objectives
class Objective:
    """Loss and metrics of a task; ``classification`` or ``reconstruction``."""

    name = "classification"

    def __init__(self, label_smoothing: float = 0.0) -> None:
        self.label_smoothing = float(label_smoothing)

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.cross_entropy(output.float(), target, label_smoothing=self.label_smoothing)

    def stats(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return {"correct": float((output.argmax(1) == target).sum())}

    def summarise(self, prefix: str, totals: dict[str, float], n: int) -> dict[str, float]:
        return {
            f"{prefix}_loss": totals["loss"] / max(n, 1),
            f"{prefix}_accuracy": totals["correct"] / max(n, 1),
        }

    def ranking(self, prefix: str, probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
        """``<prefix>_auc`` of case-level (slice or volume) probabilities (N, C) against targets (N,):
        the AUC of the last class (COVID-19) for two classes, the one-vs-rest macro mean otherwise.
        Absent when a class has no case (the AUC is undefined), so early stopping on it fails loudly."""
        present = np.unique(target)
        if probs.ndim != 2 or len(present) < probs.shape[1]:
            return {}
        if probs.shape[1] == 2:
            return {f"{prefix}_auc": binary_auc(target == 1, probs[:, 1])}
        return {f"{prefix}_auc": float(roc_auc_ovr(target, probs, average="macro"))}


class ReconstructionObjective(Objective):
    """Denoiser: mean squared error to the clean slice; also the error of the noisy input itself."""

    name = "reconstruction"

    def loss(self, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return nn.functional.mse_loss(output.float(), target.float())

    def stats(self, output: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
        return {}

    def ranking(self, prefix: str, probs: np.ndarray, target: np.ndarray) -> dict[str, float]:
        return {}

    def summarise(self, prefix: str, totals: dict[str, float], n: int) -> dict[str, float]:
        out = {f"{prefix}_loss": totals["loss"] / max(n, 1)}
        if prefix == "val":
            out["val_mse"] = out["val_loss"]
            out["val_input_mse"] = totals.get("input_mse", 0.0) / max(n, 1)
        return out


def objective_for(config: TrainConfig) -> Objective:
    if config.data.unit == "denoise":
        return ReconstructionObjective()
    return Objective(label_smoothing=config.label_smoothing)


# ------------------------------------------------------------------------------- builders
def build_model(config: TrainConfig, classes: Sequence[str]) -> nn.Module:
    """``create_model(config.model.name, **overrides)``; classifiers get the task's class names."""
    from covidct.models import create_model, get_model_class

    overrides = dict(config.model.overrides)
    params = inspect.signature(get_model_class(config.model.name).__init__).parameters
    if (
        classes
        and "class_names" in params
        and "class_names" not in overrides
        and "num_classes" not in overrides
    ):
        overrides["class_names"] = list(classes)
    return create_model(config.model.name, **overrides)


def build_optimizer(config: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    opt = config.optimizer
    params = [p for p in model.parameters() if p.requires_grad]
    if opt.name == "sgd":
        return torch.optim.SGD(params, lr=opt.lr, momentum=opt.momentum, weight_decay=opt.weight_decay)
    if opt.name == "adamw":
        return torch.optim.AdamW(params, lr=opt.lr, weight_decay=opt.weight_decay)
    return torch.optim.Adam(params, lr=opt.lr, weight_decay=opt.weight_decay)


def build_scheduler(config: TrainConfig, optimizer: torch.optim.Optimizer) -> Any:
    sched = config.scheduler
    if sched.name == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs)
    if sched.name == "step":
        return torch.optim.lr_scheduler.StepLR(optimizer, step_size=sched.step_size, gamma=sched.gamma)
    return None


def micro_batch_size(config: TrainConfig, world_size: int) -> int:
    """Per-process micro-batch: the global batch split over processes and accumulation steps."""
    parts = world_size * config.grad_accum
    if config.batch_size % parts:
        raise ConfigError(
            f"batch_size {config.batch_size} must be divisible by world_size x grad_accum = "
            f"{world_size} x {config.grad_accum}. Choose a batch size that is a multiple of {parts}."
        )
    return config.batch_size // parts


def train_indices(config: TrainConfig, dataset: Dataset) -> list[int]:
    """Training indices; with ``balance: repeat`` classes are repeated to equal counts."""
    if config.balance == "repeat":
        labels = getattr(dataset, "labels", None)
        if labels is None:
            raise ConfigError(
                "balance 'repeat' needs class labels; this dataset has none (set balance: none)."
            )
        return balance_by_repetition(labels, seed=config.seed)
    if config.balance == "source-class":
        return balance_by_source_class(dataset, seed=config.seed)
    return list(range(len(dataset)))  # type: ignore[arg-type]


def balance_by_source_class(dataset: Dataset, seed: int = 0) -> list[int]:
    """``len(dataset)`` indices drawn with replacement so every (source, class) cell is equally likely.

    Needs ``dataset.labels`` and ``dataset.record(i).source`` (slice and scan datasets have both).
    """
    labels = getattr(dataset, "labels", None)
    if labels is None or not hasattr(dataset, "record"):
        raise ConfigError("balance 'source-class' needs records with a source and class labels.")
    cells = [(str(getattr(dataset.record(i), "source", None)), int(labels[i])) for i in range(len(labels))]
    counts: dict[tuple[str, int], int] = {}
    for cell in cells:
        counts[cell] = counts.get(cell, 0) + 1
    weights = np.array([1.0 / counts[c] for c in cells])
    rng = np.random.default_rng(seed)
    return sorted(rng.choice(len(cells), size=len(cells), replace=True, p=weights / weights.sum()).tolist())


# ------------------------------------------------------------------------------- the loop
class Trainer:
    """State of one run; `train` is the public entry point."""

    def __init__(self, config: TrainConfig, data: DataBundle, *, resume: bool = False) -> None:
        self.config = config
        self.data = data
        self.resume = resume
        self.device = runtime.resolve_device(config.device)
        self.dist = runtime.init_distributed(self.device)
        if self.dist.enabled and self.device.type == "cuda":
            self.device = runtime.resolve_device(config.device, self.dist.local_rank)
        self.autocast = runtime.flag(config.amp, self.device) and self.device.type == "cuda"
        self.channels_last = runtime.flag(config.channels_last, self.device)
        self.objective = objective_for(config)
        self.out = Path(config.out_dir)
        self.history: list[dict[str, Any]] = []
        self.best_metric: float | None = None
        self.best_epoch: int | None = None
        self.bad_epochs = 0
        self.start_epoch = 0
        self.final_metrics: dict[str, float] = {}
        runtime.seed_everything(config.seed)
        self.model = build_model(config, data.classes).to(self.device)
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.adversary, self.train_sources = self._source_adversary()
        self.optimizer = build_optimizer(config, self.model)
        if self.adversary is not None:  # the head must keep up with the backbone it opposes
            self.optimizer.add_param_group({"params": list(self.adversary.parameters()),
                                            "lr": config.optimizer.lr * ADVERSARY_LR_SCALE})
        self.scheduler = build_scheduler(config, self.optimizer)
        self.net: nn.Module = self.model
        if self.dist.enabled:
            if self.device.type == "cuda":  # batch statistics over the global batch (CPU has no SyncBN)
                self.model = nn.SyncBatchNorm.convert_sync_batchnorm(self.model)
            ids = [self.device.index] if self.device.type == "cuda" else None
            self.net = nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.micro = micro_batch_size(config, self.dist.world_size)
        self.sampler = EpochSampler(
            train_indices(config, data.train),
            seed=config.seed,
            shuffle=True,
            rank=self.dist.rank,
            world_size=self.dist.world_size,
        )

    def _source_adversary(self) -> tuple[nn.Module | None, tuple[torch.Tensor, torch.Tensor] | None]:
        """The class-conditional source head (`training.source_adversary`) and each training sample's
        source index and weight, when ``source_adversary`` > 0; else (None, None)."""
        if self.config.source_adversary <= 0:
            return None, None
        if self.dist.enabled:
            raise ConfigError("source_adversary runs in one process only; train without torchrun.")
        sources, indices, weights = training_sources(self.data.train)
        adversary = build_adversary(self.model, len(self.data.classes), sources).to(self.device)
        return adversary, (indices, weights)

    # ---------------------------------------------------------------- helpers
    @property
    def main(self) -> bool:
        return self.dist.is_main

    def _loader(self, dataset: Dataset, sampler: Sampler | None, batch: int) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch,
            sampler=sampler,
            shuffle=False,
            num_workers=self.config.num_workers,
            collate_fn=self.data.collate,
            pin_memory=self.device.type == "cuda",
        )

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=True)
        if self.channels_last and tensor.ndim == 4 and tensor.is_floating_point():
            tensor = tensor.contiguous(memory_format=torch.channels_last)
        return tensor

    def _autocast(self) -> Any:
        """bf16 autocast on CUDA when ``amp`` asks for it, else a no-op context."""
        return torch.autocast("cuda", dtype=torch.bfloat16) if self.autocast else contextlib.nullcontext()

    def _forward(self, net: nn.Module, batch: dict[str, Any]) -> torch.Tensor:
        x = self._to_device(batch["input"])
        with self._autocast():
            if "mask" in batch:
                return net(x, mask=batch["mask"].to(self.device))
            return net(x)

    def _target(self, batch: dict[str, Any]) -> torch.Tensor:
        return torch.as_tensor(batch["target"]).to(self.device)

    def _adversarial_forward(self, batch: dict[str, Any], target: torch.Tensor, progress: float,
                             totals: dict[str, float]) -> tuple[torch.Tensor, torch.Tensor]:
        """Logits and the source head's source-balanced loss (gradient reversed into the backbone with
        the ramped strength at ``progress`` in [0, 1]); adds the weight it named right and the batch's
        weight to ``totals`` (the training log's source accuracy)."""
        x = self._to_device(batch["input"])
        with self._autocast():
            features = self.model.forward_features(x)
            output = self.model.forward_head(features)
            pooled = self.model.forward_head(features, pre_logits=True)
        index = torch.as_tensor(batch["index"])
        source, weight = (t[index].to(self.device) for t in self.train_sources)
        strength = self.config.source_adversary * ramp(progress)
        adv_loss, correct = self.adversary.loss(pooled, target, source, strength, weight)
        totals["source_correct"] = totals.get("source_correct", 0.0) + correct
        totals["source_weight"] = totals.get("source_weight", 0.0) + float(weight.sum())
        return output, adv_loss

    # ---------------------------------------------------------------- epochs
    def train_epoch(self, epoch: int) -> dict[str, float]:
        """One pass over the training sampler with gradient accumulation; returns train metrics."""
        self.net.train()
        if self.adversary is not None:
            self.adversary.train()
        self.sampler.set_epoch(epoch)
        if hasattr(self.data.train, "set_epoch"):
            self.data.train.set_epoch(epoch)
        loader = self._loader(self.data.train, self.sampler, self.micro)
        totals: dict[str, float] = {"loss": 0.0}
        seen = 0
        accum = self.config.grad_accum
        n_micro = len(loader)
        self.optimizer.zero_grad(set_to_none=True)
        bar = self._progress(n_micro, f"epoch {epoch + 1}/{self.config.epochs}")
        for step, batch in enumerate(loader):
            last_of_step = (step + 1) % accum == 0 or step + 1 == n_micro
            sync = contextlib.nullcontext() if (last_of_step or not self.dist.enabled) else self.net.no_sync()
            with sync:
                target = self._target(batch)
                if self.adversary is None:
                    output, adv_loss = self._forward(self.net, batch), None
                else:
                    progress = (epoch + step / n_micro) / self.config.epochs
                    output, adv_loss = self._adversarial_forward(batch, target, progress, totals)
                loss = self.objective.loss(output, target)
                total = loss if adv_loss is None else loss + adv_loss
                if not torch.isfinite(total):
                    raise _NonFiniteLoss(epoch, step, float(total.detach()))
                (total / accum).backward()
            if last_of_step:
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
            n = int(target.shape[0])
            seen += n
            totals["loss"] += float(loss.detach()) * n
            for key, value in self.objective.stats(output.detach(), target).items():
                totals[key] = totals.get(key, 0.0) + value
            if bar is not None:
                bar.update(1)
                bar.set_postfix(self._postfix(totals, seen))
        if bar is not None:
            bar.close()
        totals, seen = self._all_reduce(totals, seen)
        metrics = self.objective.summarise("train", totals, seen)
        if "source_correct" in totals:  # source-balanced; near chance = sources no longer told apart
            metrics["train_source_accuracy"] = totals["source_correct"] / max(totals["source_weight"], 1e-12)
        return metrics

    def _all_reduce(self, totals: dict[str, float], seen: int) -> tuple[dict[str, float], int]:
        """Sum per-process metric totals over DDP ranks (identity in one process)."""
        if not self.dist.enabled:
            return totals, seen
        keys = sorted(totals)
        packed = torch.tensor([totals[k] for k in keys] + [float(seen)], dtype=torch.float64)
        dist.all_reduce(packed)
        return {k: float(v) for k, v in zip(keys, packed[:-1].tolist(), strict=True)}, int(packed[-1])

    def _progress(self, total: int, desc: str) -> Any:
        if not (self.config.progress and self.main):
            return None
        from tqdm.auto import tqdm

        return tqdm(total=total, desc=desc, leave=False, dynamic_ncols=True)

    @staticmethod
    def _postfix(totals: dict[str, float], seen: int) -> dict[str, str]:
        out = {"loss": f"{totals['loss'] / max(seen, 1):.4f}"}
        if "correct" in totals:
            out["acc"] = f"{totals['correct'] / max(seen, 1):.3f}"
        return out

    @torch.no_grad()
    def evaluate(self, dataset: Dataset, prefix: str) -> tuple[dict[str, float], dict[str, Any]]:
        """Metrics over ``dataset`` and raw outputs (indices, probabilities) for predictions."""
        self.model.eval()
        batch = self.config.eval_batch_size or self.micro
        loader = self._loader(dataset, None, batch)
        totals: dict[str, float] = {"loss": 0.0}
        seen = 0
        indices: list[torch.Tensor] = []
        probs: list[torch.Tensor] = []
        targets: list[torch.Tensor] = []
        for item in loader:
            output = self._forward(self.model, item)
            target = self._target(item)
            n = int(target.shape[0])
            seen += n
            totals["loss"] += float(self.objective.loss(output, target)) * n
            for key, value in self.objective.stats(output, target).items():
                totals[key] = totals.get(key, 0.0) + value
            if self.objective.name == "classification":
                indices.append(torch.as_tensor(item["index"]))
                probs.append(output.float().softmax(1).cpu())
                targets.append(target.cpu())
            else:
                x = item["input"].to(self.device)
                totals["input_mse"] = (
                    totals.get("input_mse", 0.0) + float(nn.functional.mse_loss(x, target.float())) * n
                )
        raw = {
            "index": torch.cat(indices).tolist() if indices else [],
            "probs": torch.cat(probs).numpy() if probs else np.zeros((0, 0)),
        }
        metrics = self.objective.summarise(prefix, totals, seen)
        if targets:
            metrics.update(self.objective.ranking(prefix, raw["probs"], torch.cat(targets).numpy()))
        return metrics, raw

    # ---------------------------------------------------------------- checkpoints
    def _resume_state(self, epoch: int) -> dict[str, Any]:
        return {
            "format": RESUME_FORMAT,
            "epoch": epoch,
            "model": {k: v.detach().cpu() for k, v in self.model.state_dict().items()},
            "adversary": None if self.adversary is None else self.adversary.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict() if self.scheduler is not None else None,
            "rng": runtime.rng_state(),
            "best_metric": self.best_metric,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "config": self.config.to_dict(),
        }

    def load_resume(self) -> None:
        """Restore everything from ``last.ckpt`` so the run continues exactly."""
        path = self.out / LAST_CKPT
        if not path.is_file():
            raise CheckpointError(
                f"--resume was given but {path} does not exist. Start without --resume, or point --out "
                "at the folder of the run to continue."
            )
        state = torch.load(path, map_location="cpu", weights_only=False)
        if state.get("format") != RESUME_FORMAT:
            raise CheckpointError(
                f"{path} is not a covidct resume checkpoint (format {state.get('format')})."
            )
        self.model.load_state_dict(state["model"])
        if self.adversary is not None and state.get("adversary") is not None:
            self.adversary.load_state_dict(state["adversary"])
        self.optimizer.load_state_dict(state["optimizer"])
        if self.scheduler is not None and state["scheduler"] is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        runtime.set_rng_state(state["rng"])
        self.start_epoch = int(state["epoch"])
        self.best_metric, self.best_epoch = state["best_metric"], state["best_epoch"]
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])

    def save_best(self, epoch: int, metrics: dict[str, float]) -> None:
        from covidct.models import save_checkpoint

        recipe = (
            self.data.recipe.to_dict()
            if hasattr(self.data.recipe, "to_dict")
            else dict(self.data.recipe or {})
        )
        provenance = {
            "training_data": self.data.description.get("data", self.config.data.path),
            "run": self.config.name,
            "epoch": epoch + 1,
            "code_version": runtime.code_version(),
        }
        extra = {"metric": self.config.early_stopping.metric, **{k: float(v) for k, v in metrics.items()}}
        save_checkpoint(self.out / BEST_CKPT, self.model, recipe=recipe, provenance=provenance, extra=extra)

    # ---------------------------------------------------------------- the run
    def improved(self, value: float | None) -> bool:
        if value is None:  # no validation set: the latest epoch is the best
            return True
        if self.best_metric is None:
            return True
        return value < self.best_metric if self.config.metric_mode == "min" else value > self.best_metric

    def run(self) -> RunResult:
        started = time.perf_counter()
        cfg = self.config
        if self.resume:
            self.load_resume()
        if self.main:
            self._write_run_files()
        log = runtime.TensorBoardLog(self.out / "tb") if self.main else None
        stop_at = min(cfg.epochs, cfg.max_epochs or cfg.epochs)
        stopped_early = False
        epoch = self.start_epoch
        try:
            for epoch in range(self.start_epoch, stop_at):
                row = self._one_epoch(epoch)
                if log is not None:
                    log.log(row, epoch + 1)
                if cfg.early_stopping.patience and self.bad_epochs >= cfg.early_stopping.patience:
                    stopped_early = True
                    break
        except _NonFiniteLoss as exc:
            raise TrainingError(
                f"The training loss became {exc.value} at epoch {exc.epoch + 1}, step {exc.step + 1} "
                f"(lr {cfg.optimizer.lr}). Lower optimizer.lr, check the inputs for NaN/inf, "
                "or turn amp off. "
                f"{self._kept_message()}"
            ) from None
        except KeyboardInterrupt:
            raise TrainingError(
                f"Training was interrupted during epoch {epoch + 1}. {self._kept_message()}"
            ) from None
        except (MemoryError, RuntimeError) as exc:
            if isinstance(exc, MemoryError) or any(m in str(exc).lower() for m in OOM_MARKERS):
                raise TrainingError(
                    f"Out of memory on {self.device} during epoch {epoch + 1} (batch_size {cfg.batch_size}): "
                    f"lower batch_size or raise grad_accum, shrink the input size, or use another device. "
                    f"{self._kept_message()}"
                ) from exc
            raise
        finally:
            if log is not None:
                log.close()
        predictions = self._write_predictions() if self.main else {}
        result = RunResult(
            out_dir=str(self.out),
            epochs_run=len(self.history),
            best_epoch=self.best_epoch,
            best_metric=self.best_metric,
            metric=cfg.early_stopping.metric,
            stopped_early=stopped_early,
            history=self.history,
            best_checkpoint=str(self.out / BEST_CKPT) if self.best_epoch else None,
            last_checkpoint=str(self.out / LAST_CKPT),
            predictions=predictions,
            final_metrics=self.final_metrics,
            wall_time_s=round(time.perf_counter() - started, 2),
        )
        if self.main:
            runtime.write_json(self.out / "result.json", result.to_dict())
        if self.dist.enabled:
            dist.barrier()
        return result

    def _one_epoch(self, epoch: int) -> dict[str, Any]:
        cfg = self.config
        t0 = time.perf_counter()
        runtime.seed_everything(cfg.seed, epoch + 1)
        row: dict[str, Any] = {"epoch": epoch + 1, "lr": self.optimizer.param_groups[0]["lr"]}
        row.update(self.train_epoch(epoch))
        if self.scheduler is not None:
            self.scheduler.step()
        if self.data.val is not None and len(self.data.val) > 0:  # type: ignore[arg-type]
            row.update(self.evaluate(self.data.val, "val")[0])
        row["time_s"] = round(time.perf_counter() - t0, 3)
        value = row.get(cfg.early_stopping.metric)
        if value is None and self.data.val is not None:
            raise ConfigError(
                f"early_stopping.metric {cfg.early_stopping.metric!r} is not computed by this run; "
                f"available: {', '.join(k for k in row if k.startswith('val_'))}."
            )
        if self.improved(value):
            self.best_metric, self.best_epoch, self.bad_epochs = value, epoch + 1, 0
            if self.main:
                self.save_best(epoch, {k: v for k, v in row.items() if isinstance(v, float)})
        else:
            self.bad_epochs += 1
        self.history.append(row)
        if self.main:
            runtime.atomic_save(self._resume_state(epoch + 1), self.out / LAST_CKPT)
            runtime.write_metrics_csv(self.out / "metrics.csv", self.history)
        return row

    def _kept_message(self) -> str:
        last = self.out / LAST_CKPT
        if last.is_file():
            done = len(self.history)
            return (
                f"The last good checkpoint {last} (after epoch {done}) is kept; continue with "
                "`covidct train --config ... --resume`."
            )
        return "No epoch had finished, so there is no checkpoint to resume from."

    def _write_run_files(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        self.config.to_yaml(self.out / "config.yaml")
        runtime.write_json(self.out / "env.json", runtime.environment(self.device, self.dist))
        runtime.write_json(self.out / "data.json", self.data.description)

    def _write_predictions(self) -> dict[str, str]:
        """Reload the best weights and write predictions CSVs for the val and test sets."""
        if self.objective.name != "classification" or self.best_epoch is None:
            return {}
        from covidct.models import load_checkpoint

        best = load_checkpoint(self.out / BEST_CKPT, map_location="cpu")
        self.model.load_state_dict({k: v.to(self.device) for k, v in best.model.state_dict().items()})
        out: dict[str, str] = {}
        for split, dataset in (("val", self.data.val), ("test", self.data.test)):
            if dataset is None or len(dataset) == 0:  # type: ignore[arg-type]
                continue
            metrics, raw = self.evaluate(dataset, split)
            path = self.out / f"predictions_{split}.csv"
            write_predictions(path, dataset, raw["index"], raw["probs"], self.data.classes)
            out[split] = str(path)
            self.final_metrics.update(metrics)
        return out


class _NonFiniteLoss(Exception):
    def __init__(self, epoch: int, step: int, value: float) -> None:
        super().__init__(f"non-finite loss {value}")
        self.epoch, self.step, self.value = epoch, step, value


def write_predictions(
    path: Path, dataset: Any, indices: Sequence[int], probs: np.ndarray, classes: Sequence[str]
) -> Path:
    """``case_id,patient_id,label,prob_<class>...[,slice_index][,source]`` (evaluation's format)."""
    with_slice = any(dataset.slice_index(i) is not None for i in indices)
    header = ["case_id", "patient_id", "label", *[f"prob_{c}" for c in classes]]
    header += ["slice_index"] if with_slice else []
    header += ["source"]
    labels = getattr(dataset, "labels", None)
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for row, index in enumerate(indices):
            rec = dataset.record(index)
            label = classes[labels[index]] if labels is not None else rec.label
            line = [
                rec.case_id,
                getattr(rec, "patient_id", None) or rec.case_id,
                label,
                *[f"{p:.6f}" for p in probs[row]],
            ]
            if with_slice:
                si = dataset.slice_index(index)
                line.append("" if si is None else si)
            line.append(getattr(rec, "source", None) or "")
            writer.writerow(line)
    return path


def train(config: TrainConfig, data: DataBundle | None = None, *, resume: bool = False) -> RunResult:
    """Train ``config``; ``data`` defaults to `covidct.training.data.build_data(config)`.

    Raises:
        TrainingError: NaN/inf loss, out of memory, or an interrupt (the last good checkpoint is kept).
        ConfigError, DataLeakageError, CheckpointError: bad configuration, leaking splits, bad resume.
    """
    if data is None:
        data = build_data(config)
    trainer = Trainer(config, data, resume=resume)
    result = trainer.run()
    if trainer.main and trainer.objective.name == "classification" and result.best_epoch is not None:
        from covidct.training.model_card import write_model_card

        write_model_card(result.out_dir)
    return result
