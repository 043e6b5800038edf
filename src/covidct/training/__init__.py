"""One training engine for every model: configs, datasets, patient splits, `train`.

Public API: `TrainConfig`, `train`, `RunResult`, `DataBundle`, `build_data`, `split_by_patient`,
`balance_by_repetition`, `SliceDataset`, `ScanDataset`, `SliceSetDataset`, `DenoiserDataset`,
`collate_slice_sets`, `launch_ddp`.
"""

from covidct.training.config import TrainConfig
from covidct.training.data import DataBundle
from covidct.training.datasets import (
    DenoiserDataset,
    ScanDataset,
    SliceDataset,
    SliceRef,
    SliceSetDataset,
    collate_slice_sets,
    slice_refs,
)
from covidct.training.engine import RunResult, train
from covidct.training.splits import balance_by_repetition, split_by_patient


def build_data(config, records=None, **kwargs):  # noqa: ANN001, ANN201 - thin lazy re-export
    """See `covidct.training.data.build_data` (imported lazily: it needs io + preprocessing)."""
    from covidct.training.data import build_data as _build

    return _build(config, records, **kwargs)


def launch_ddp(config, data=None, **kwargs):  # noqa: ANN001, ANN201 - thin lazy re-export
    """See `covidct.training.distributed.launch_ddp`."""
    from covidct.training.distributed import launch_ddp as _launch

    return _launch(config, data, **kwargs)


__all__ = [
    "DataBundle",
    "DenoiserDataset",
    "RunResult",
    "ScanDataset",
    "SliceDataset",
    "SliceRef",
    "SliceSetDataset",
    "TrainConfig",
    "balance_by_repetition",
    "build_data",
    "collate_slice_sets",
    "launch_ddp",
    "slice_refs",
    "split_by_patient",
    "train",
]
