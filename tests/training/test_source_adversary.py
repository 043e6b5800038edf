"""Class-conditional source adversary: reversed gradients, one head per class, wired into the engine
(trained with the model, kept out of best.ckpt, saved for --resume)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.training.test_engine import TINY_MODEL, slice_bundle, tiny_config

from covidct import models
from covidct.errors import ConfigError
from covidct.training import DataBundle, TrainConfig, train
from covidct.training.engine import LAST_CKPT, Trainer
from covidct.training.source_adversary import (
    ADVERSARY_LR_SCALE,
    SourceAdversary,
    build_adversary,
    ramp,
    reverse_gradient,
    training_sources,
)


def test_reverse_gradient_is_identity_forward_and_negated_scaled_backward() -> None:
    x = torch.tensor([1.0, -2.0, 3.0], requires_grad=True)
    y = reverse_gradient(x, 0.5)
    assert torch.equal(y, x)
    (y * torch.tensor([1.0, 2.0, 3.0])).sum().backward()
    assert torch.allclose(x.grad, torch.tensor([-0.5, -1.0, -1.5]))


def test_ramp_rises_from_zero_towards_one() -> None:
    values = [ramp(p) for p in (0.0, 0.1, 0.5, 1.0)]
    assert values[0] == 0.0 and values == sorted(values) and 0.99 < values[-1] <= 1.0
    assert ramp(-1.0) == 0.0 and ramp(2.0) == values[-1]


def test_each_sample_goes_to_its_own_class_head() -> None:
    torch.manual_seed(0)
    adversary = SourceAdversary(num_features=6, num_classes=2, sources=("A", "B", "C"))
    pooled = torch.randn(5, 6)
    target = torch.tensor([0, 1, 1, 0, 1])
    logits = adversary(pooled, target)
    for i in range(5):
        expected = adversary.heads[int(target[i])](pooled[i : i + 1])[0]
        assert torch.allclose(logits[i], expected)
        assert not torch.allclose(logits[i], adversary.heads[1 - int(target[i])](pooled[i : i + 1])[0])


def test_backbone_gets_the_source_gradient_reversed_and_scaled() -> None:
    torch.manual_seed(0)
    model = models.create_model("covidnet-ct2-s", num_classes=2, **TINY_MODEL).eval()
    adversary = build_adversary(model, 2, ("A", "B", "C"))
    x = torch.rand(4, 3, 32, 32)
    target, source = torch.tensor([0, 1, 0, 1]), torch.tensor([0, 1, 2, 1])
    weight = model.stem[0].weight

    def pooled() -> torch.Tensor:
        return model.forward_head(model.forward_features(x), pre_logits=True)

    loss, _ = adversary.loss(pooled(), target, source, strength=0.3)
    (reversed_grad,) = torch.autograd.grad(loss, weight)
    plain = torch.nn.functional.cross_entropy(adversary(pooled(), target), source)
    (plain_grad,) = torch.autograd.grad(plain, weight)
    assert plain_grad.abs().sum() > 0
    assert torch.allclose(reversed_grad, -0.3 * plain_grad, atol=1e-7)


def _two_source_bundle(phantoms: Any, recipe: Any, config: TrainConfig) -> DataBundle:
    """The phantom slices with patients alternately from sources S0 and S1."""
    pids = sorted({r.patient_id for r in phantoms.records})
    source = {pid: f"S{i % 2}" for i, pid in enumerate(pids)}
    sourced = dataclasses.replace(phantoms, records=[dataclasses.replace(r, source=source[r.patient_id])
                                                     for r in phantoms.records])
    return slice_bundle(sourced, recipe, config)


def test_engine_trains_the_adversary_and_keeps_it_out_of_best_ckpt(
    tmp_path: Path, phantom_slices: Any, tiny_recipe: Any
) -> None:
    config = tiny_config(tmp_path, "adv", source_adversary=0.5, epochs=1)
    data = _two_source_bundle(phantom_slices, tiny_recipe, config)
    trainer = Trainer(config, data)
    assert trainer.adversary is not None and trainer.adversary.sources == ("S0", "S1")
    head_group = trainer.optimizer.param_groups[-1]
    assert {id(p) for p in head_group["params"]} == {id(p) for p in trainer.adversary.parameters()}
    assert head_group["lr"] == pytest.approx(config.optimizer.lr * ADVERSARY_LR_SCALE)
    before = {k: v.clone() for k, v in trainer.adversary.state_dict().items()}
    metrics = trainer.train_epoch(0)
    assert 0.0 <= metrics["train_source_accuracy"] <= 1.0
    changed = [k for k, v in trainer.adversary.state_dict().items() if not torch.equal(v, before[k])]
    assert changed, "the adversary's parameters must be in the optimizer"
    result = train(config, _two_source_bundle(phantom_slices, tiny_recipe, config))
    best = torch.load(Path(result.out_dir) / "best.ckpt", weights_only=True)
    plain_keys = set(models.create_model("covidnet-ct2-s", num_classes=3, **TINY_MODEL).state_dict())
    assert set(best["state_dict"]) == plain_keys
    last = torch.load(Path(result.out_dir) / LAST_CKPT, weights_only=False)
    assert set(last["adversary"]) == set(trainer.adversary.state_dict())
    assert "train_source_accuracy" in result.history[0]


def test_one_source_or_a_negative_strength_is_refused(
    tmp_path: Path, phantom_slices: Any, tiny_recipe: Any
) -> None:
    config = tiny_config(tmp_path, "one", source_adversary=0.5)
    with pytest.raises(ConfigError, match="at least two training sources"):
        Trainer(config, slice_bundle(phantom_slices, tiny_recipe, config))
    with pytest.raises(ConfigError, match="source_adversary must be >= 0"):
        tiny_config(tmp_path, "neg", source_adversary=-0.1)
    with pytest.raises(ConfigError, match="records name their source and class"):
        training_sources([1, 2, 3])
    with pytest.raises(ConfigError, match="for 2D slice models"):
        build_adversary(models.create_model("covidctnet-classifier", num_classes=2), 2, ("A", "B"))


class _Records:
    """A dataset stand-in: labels and records with a source."""

    def __init__(self, cells: list[tuple[int, str]]) -> None:
        self.labels = [c for c, _ in cells]
        self._sources = [s for _, s in cells]

    def __len__(self) -> int:
        return len(self.labels)

    def record(self, i: int) -> Any:
        return dataclasses.make_dataclass("R", ["source"])(self._sources[i])


def test_every_source_weighs_the_same_within_its_class() -> None:
    # class 0: A x3, B x1; class 1: A x1, C x1
    data = _Records([(0, "A"), (0, "A"), (0, "A"), (0, "B"), (1, "A"), (1, "C")])
    sources, index, weight = training_sources(data)
    assert sources == ("A", "B", "C") and index.tolist() == [0, 0, 0, 1, 0, 2]
    assert torch.allclose(weight, torch.tensor([2 / 3, 2 / 3, 2 / 3, 2.0, 1.0, 1.0]))
    per_cell = {}
    for (c, s), w in zip([(0, "A")] * 3 + [(0, "B"), (1, "A"), (1, "C")], weight.tolist(), strict=True):
        per_cell[(c, s)] = per_cell.get((c, s), 0.0) + w
    assert per_cell == pytest.approx({(0, "A"): 2.0, (0, "B"): 2.0, (1, "A"): 1.0, (1, "C"): 1.0})


def test_the_weighted_loss_is_the_weighted_mean_of_the_sample_losses() -> None:
    torch.manual_seed(0)
    adversary = SourceAdversary(num_features=4, num_classes=2, sources=("A", "B"))
    pooled, target, source = torch.randn(3, 4), torch.tensor([0, 0, 1]), torch.tensor([0, 1, 1])
    weight = torch.tensor([1.0, 3.0, 0.0])
    loss, correct = adversary.loss(pooled, target, source, strength=1.0, weight=weight)
    each = torch.nn.functional.cross_entropy(adversary(pooled, target), source, reduction="none")
    assert torch.allclose(loss, (each[0] + 3 * each[1]) / 4)
    named = (adversary(pooled, target).argmax(1) == source).float()
    assert correct == pytest.approx(float((weight * named).sum()))
