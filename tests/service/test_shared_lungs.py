"""Issues 13 and 21: the Predictor analyses each study once (`covidct.quant.analyse_ct`: lungs, lesions,
zones, periphery) and shares that analysis with the lung-slice selection and the explanation."""

from __future__ import annotations

import numpy as np
import pytest
from tests.helpers import random_ct2s_checkpoint

from covidct.quant import analysis as analysis_module
from covidct.quant import regions as regions_module
from covidct.quant.analysis import analyse_ct, grid_factor
from covidct.service.predictor import Predictor
from covidct.service.quantitative import quantify_study
from covidct.synthetic import make_phantom

SIZE = 32
COUNTED = ((analysis_module, "segment_lungs"), (analysis_module, "segment_lesions"),
           (regions_module, "zone_map"), (regions_module, "peripheral_map"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory):
    return random_ct2s_checkpoint(tmp_path_factory.mktemp("ckpt"), SIZE)


@pytest.fixture(scope="module")
def volume():
    """A COVID-19 phantom at 0.7 mm pixels, so the analysis grid is 2x2-averaged (factor 2)."""
    vol = make_phantom("COVID-19", shape=(12, 128, 128), spacing=(5.0, 0.7, 0.7), seed=3).volume
    assert grid_factor(vol) == 2
    return vol


def count_calls(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[tuple[int, ...]]]:
    """Record the input shape of every lung, lesion, zone and periphery computation."""
    calls: dict[str, list[tuple[int, ...]]] = {name: [] for _, name in COUNTED}
    for module, name in COUNTED:
        original = getattr(module, name)

        def counted(first, *args, _original=original, _name=name, **kwargs):
            calls[_name].append(tuple(np.shape(getattr(first, "array", first))))
            return _original(first, *args, **kwargs)

        monkeypatch.setattr(module, name, counted)
    return calls


def test_one_analysis_per_study_serves_the_report_slices_and_explanation(checkpoint, volume,
                                                                           monkeypatch) -> None:
    calls = count_calls(monkeypatch)
    result = Predictor([checkpoint], backend="torch").predict(volume)
    assert result.heatmap is not None  # the explanation ran
    assert calls == {name: [(12, 64, 64)] for _, name in COUNTED}  # once each, on the 2x2 analysis grid
    monkeypatch.undo()
    analysis = analyse_ct(volume)
    assert result.quantitative == {"available": True, **analysis.to_dict()} == quantify_study(volume).section
    # the explanation's lung summary is the analysis's: same lung volumes, same lesion shares
    assert result.distribution["lung_volume_ml"] == analysis.lung_volume_ml()
    assert result.distribution["total"] == analysis.lesion_quantification().to_dict()["total"]
    assert result.abnormal_fraction == pytest.approx(analysis.report.involvement["total"], abs=1e-6)
    np.testing.assert_array_equal(result.lesion_labels, analysis.lesion_labels())


def test_lung_labels_on_the_volume_grid_are_the_analysis_labels(volume) -> None:
    analysis = analyse_ct(volume)
    full = analysis.lung_labels_full()
    assert full.shape == volume.shape
    # block k of the analysis grid covers volume pixels 2k and 2k+1 in y and x; the blocks on either
    # side of the lung boundary are redrawn at the volume's resolution (issue 21), the others are kept
    from covidct.quant.analysis import lung_boundary_blocks

    inner = ~lung_boundary_blocks(analysis.lung_labels)[0]
    assert inner.mean() > 0.9
    np.testing.assert_array_equal(full[:, ::2, ::2][inner], analysis.lung_labels[inner])
    np.testing.assert_array_equal(full[:, 1::2, 1::2][inner], analysis.lung_labels[inner])


def test_models_score_the_lung_slices_while_the_lesions_are_analysed(checkpoint, volume, monkeypatch) -> None:
    """The slice model needs only the lungs: it runs while the lesions, zones and scores are still being
    computed (the lesion step here waits until the model has started; were the model to wait for the
    whole analysis, the lesion step would time out)."""
    import threading

    from covidct.service import predictor as predictor_module

    model_started = threading.Event()
    scored: list[np.ndarray] = []
    run_model, find_lesions = predictor_module.predict_volume, analysis_module.segment_lesions

    def model(*args, informative=None, **kwargs):
        model_started.set()
        scored.append(informative)
        return run_model(*args, informative=informative, **kwargs)

    def lesions(*args, **kwargs):
        if not model_started.wait(timeout=20):
            raise AssertionError("the model waited for the lesion analysis")
        return find_lesions(*args, **kwargs)

    monkeypatch.setattr(predictor_module, "predict_volume", model)
    monkeypatch.setattr(analysis_module, "segment_lesions", lesions)
    result = Predictor([checkpoint], backend="torch").predict(volume)
    assert result.quantitative["available"]
    # the slices scored are the lung slices of the one analysis
    from covidct.quant import lung_slice_mask

    monkeypatch.undo()
    analysis = analyse_ct(volume)
    np.testing.assert_array_equal(scored[0], lung_slice_mask(analysis.lung_labels, analysis.spacing))


def test_full_resolution_lungs_are_drawn_once_in_the_analysis_thread(checkpoint, volume, monkeypatch) -> None:
    """The lung labels on the volume's grid (the explanation's lung summary, the masks) are redrawn once, in
    the analysis thread beside the models, not on the path from the model to the stored result."""
    import threading

    threads: list[str] = []
    refine = analysis_module.refine_lung_boundary

    def recording(*args, **kwargs):
        threads.append(threading.current_thread().name)
        return refine(*args, **kwargs)

    monkeypatch.setattr(analysis_module, "refine_lung_boundary", recording)
    result = Predictor([checkpoint], backend="torch").predict(volume)
    assert result.heatmap is not None and result.lung_labels is not None
    assert len(threads) == 1 and threads[0].startswith("covidct-quant")
