"""balance: source-class and label smoothing (issue 11 robustness options)."""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
import torch

from covidct.errors import ConfigError
from covidct.training import TrainConfig
from covidct.training.engine import balance_by_source_class, objective_for, train_indices


class _Records:
    """90 slices of source A (60 class 0, 30 class 1) and 10 of source B (class 1)."""

    def __init__(self) -> None:
        self.cells = [("A", 0)] * 60 + [("A", 1)] * 30 + [("B", 1)] * 10
        self.labels = [label for _, label in self.cells]

    def __len__(self) -> int:
        return len(self.cells)

    def record(self, i: int) -> SimpleNamespace:
        return SimpleNamespace(source=self.cells[i][0])


def test_source_class_balance_draws_every_cell_equally_often() -> None:
    ds = _Records()
    idx = balance_by_source_class(ds, seed=0)
    assert len(idx) == len(ds) and idx == balance_by_source_class(ds, seed=0)
    per_cell = Counter(ds.cells[i] for i in idx)
    assert set(per_cell) == {("A", 0), ("A", 1), ("B", 1)}
    for count in per_cell.values():  # 1/3 each, within sampling noise
        assert 20 <= count <= 47
    config = TrainConfig(balance="source-class")
    assert train_indices(config, ds) == idx


def test_label_smoothing_changes_the_loss_and_is_validated() -> None:
    logits, target = torch.tensor([[4.0, -4.0]]), torch.tensor([0])
    plain = objective_for(TrainConfig()).loss(logits, target)
    smooth = objective_for(TrainConfig(label_smoothing=0.2)).loss(logits, target)
    assert float(smooth) > float(plain) + 0.1
    with pytest.raises(ConfigError, match="label_smoothing"):
        TrainConfig.from_dict({"label_smoothing": 1.5})
