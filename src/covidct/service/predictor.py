"""The one `Predictor` every adapter (CLI, REST API, DICOM node, demo) calls.

It loads checkpoints once and turns a study (path or `Volume`) into a JSON-able `StudyResult`:
probabilities, the decision at the checkpoint's operating point, per-slice scores, the abnormal-lung
fraction, explanation overlays for key slices, reading warnings and per-stage timings; and, beside
the model, the quantitative CT from HU alone (`service.quantitative`). With no checkpoint the
quantitative CT is the whole result: no class, no probabilities, lesion overlays.
"""

from __future__ import annotations

import hashlib
import threading
import time
import warnings as pywarnings
from collections.abc import Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from covidct import RESEARCH_USE_STATEMENT, __version__
from covidct.classes import COVID
from covidct.errors import CheckpointError, ExplainError, InputError, MaskGeometryError
from covidct.evaluation.fusion import LABEL as FUSED_LABEL
from covidct.evaluation.fusion import FusedScore, fused_from_extra
from covidct.evaluation.operating_point import apply_threshold
from covidct.evaluation.validity import statement, validity_from_extra
from covidct.explain import compute_heatmap, explain
from covidct.io import read_volume
from covidct.io.display import display_info, edge_letters, slice_numbering
from covidct.io.masks import volume_source_datasets
from covidct.io.volume import Volume
from covidct.jsonable import to_jsonable
from covidct.models import load_checkpoint
from covidct.models.backends import choose_backend, default_backend, default_batch_size
from covidct.models.device import resolve_device
from covidct.models.inference import ScanPrediction, predict_volume, recipe_of, timed
from covidct.quant import CTAnalysis, LungGrid, lung_slice_mask
from covidct.service import images
from covidct.service.quantitative import (
    QuantOutcome,
    involvement,
    lesion_key_slices,
    lesion_overlay,
    quantify_study,
    study_lungs,
)

STAGES = ("read", "preprocess", "model", "explain", "quantify", "report")
LUNG_SLICES_DEFAULT = True
"""Slice models score only slices with lung: on by default because it left the patient-level result
of every shared real study unchanged (docs/results.md, issue 13)."""
NO_MODEL_NAME = "quantitative-ct"
"""`model_name` of a Predictor without checkpoints (HU analysis only)."""
DEFAULT_KEY_SLICES = 3
DEFAULT_EXPLAIN_METHOD = "gradcam"
HASH_CHUNK = 1 << 20
VERSION_HASH_CHARS = 12
PROB_DIGITS = 6
MAX_JSON_ARRAY = 1024
"""Arrays in the distribution summary larger than this are described, not listed."""
QUANT_KEYS = ("source", "total", "per_lung", "per_zone", "central_peripheral", "ggo_ml", "consolidation_ml")


@dataclass
class StudyResult:
    """What the Predictor says about one study. `to_dict()` is JSON-ready (no arrays, no bytes)."""

    source: str
    series_uid: str | None
    study_uid: str | None
    model_name: str
    model_version: str
    class_names: list[str]
    probabilities: dict[str, float]
    predicted_class: str | None
    """None when no model ran (quantitative CT only)."""
    decision: dict[str, Any]
    covid_probability: float | None
    slice_scores: list[float] | None
    key_slices: list[int]
    abnormal_fraction: float | None
    distribution: dict[str, Any] | None
    num_slices: int
    spacing_mm: list[float]
    is_hu: bool
    warnings: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    models: list[dict[str, Any]] = field(default_factory=list)
    quantitative: dict[str, Any] | None = None
    """Quantitative CT from HU (`covidct.quant.analyse_ct`): ``available`` and the scores, or the reason."""
    fused: dict[str, Any] | None = None
    """Fused COVID-19 score (model probability + involvement) when the checkpoint carries fusion weights
    fitted on validation data (`covidct fuse fit`): ``probability``, ``label``, weights, ``fitted_on``;
    else None."""
    device: str = "cpu"
    """The compute device the models ran on (``cpu``, ``cuda:0``)."""
    backend: str | None = None
    """What ran the models: ``pytorch-cpu``, ``pytorch-cuda`` or ``onnxruntime-cpu`` (``+``-joined when
    ensemble members differ); None when no model ran (quantitative CT only)."""
    validity: list[dict[str, Any]] | None = None
    """Per model: what it is known to do on a source it never saw (`evaluation.validity`): the
    held-out figures its checkpoint carries and a ``statement``, which says so when there are none.
    None when no model ran."""
    masks: dict[str, Any] | None = None
    """File names of the quantitative CT's masks (NIfTI lung and lesion labels, DICOM SEG), set when they
    are written (`covidct.service.masks.write_study_masks`: `covidct predict`, triage, the API)."""
    slice_numbers: dict[str, Any] | None = None
    """How the report numbers slices for PACS (`slice_numbering`): ``kind`` and one number per slice."""
    display: dict[str, Any] = field(default_factory=dict)
    """Viewer labels (`covidct.io.display.display_info`): patient/study text, slice numbers, orientation."""
    research_use: str = RESEARCH_USE_STATEMENT
    overlays: dict[int, bytes] = field(default_factory=dict, repr=False)
    """PNG bytes of the key slices, heatmap (or, without one, the lesions) blended on (not in `to_dict`)."""
    volume: Volume | None = field(default=None, repr=False)
    heatmap: np.ndarray | None = field(default=None, repr=False)
    """(z, y, x) heatmap in [0, 1] at the volume's size, or None when explanations were unavailable."""
    lesion_labels: np.ndarray | None = field(default=None, repr=False)
    """(z, y, x) uint8 quantitative-CT lesions (0 none, 1 ground glass, 2 consolidation), or None."""
    lung_labels: np.ndarray | None = field(default=None, repr=False)
    """(z, y, x) uint8 quantitative-CT lungs on the volume's grid (1 right, 2 left), or None."""
    clean_images: dict[int, bytes] = field(default_factory=dict, repr=False)
    """PNG bytes of the key slices without overlay (the report shows each clean and with its overlay);
    both carry the patient-side letters and a scale bar."""
    source_headers: list[Any] | None = field(default=None, repr=False)
    """The source DICOM headers in slice order (read once: slice numbers, then the masks' SEG), or None."""

    NON_JSON = ("overlays", "volume", "heatmap", "lesion_labels", "lung_labels", "clean_images",
                "source_headers")

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in self.__dict__.items() if k not in self.NON_JSON}
        out["overlay_slices"] = sorted(self.overlays)
        out["has_heatmap"] = self.heatmap is not None
        out["has_lesions"] = self.lesion_labels is not None
        return out


@dataclass(frozen=True)
class LoadedModel:
    checkpoint: Any
    name: str
    version: str
    path: str | None


class Predictor:
    """Loads one or more checkpoints once; `predict()` runs read -> model -> explain -> report.

    Several checkpoints form an ensemble whose probabilities are averaged; they must share class names.
    Thread-safe: reading runs in parallel, the model and explanation stages hold a lock.
    """

    def __init__(self, checkpoints: Sequence[str | Path | Any], *, explain: bool = True,
                 explain_method: str = DEFAULT_EXPLAIN_METHOD, key_slices: int = DEFAULT_KEY_SLICES,
                 batch_size: int | None = None, backend: str | None = None,
                 quantitative: bool = True, lung_slices: bool = LUNG_SLICES_DEFAULT,
                 device: str = "auto") -> None:
        self.device = resolve_device(device)  # before loading: --device cuda without a GPU fails fast
        self.models = [_load(c) for c in checkpoints]
        for m in self.models:
            m.checkpoint.model.to(self.device)
        self.class_names = list(self.models[0].checkpoint.class_names) if self.models else []
        for m in self.models[1:]:
            if list(m.checkpoint.class_names) != self.class_names:
                raise CheckpointError(
                    f"Ensemble checkpoints disagree on classes: {self.class_names} vs "
                    f"{list(m.checkpoint.class_names)} ({m.name}). Ensemble models of one task.")
        self.explain_enabled = explain
        self.explain_method = explain_method
        self.n_key_slices = key_slices
        self.batch_size = batch_size or default_batch_size()
        self.backend = backend or default_backend()
        self.lung_slices = lung_slices
        self.quantitative = quantitative or not self.models
        self._lock = threading.Lock()
        self._explain_warning: str | None = None
        self._backend: str | None = None
        """Backend name(s) of the last model pass (read under the lock)."""
        self.fusion = self._fusion()

    def _fusion(self) -> FusedScore | None:
        """Fusion weights of a single checkpoint (fitted on its own probabilities), else None."""
        fused = [fused_from_extra(getattr(m.checkpoint, "extra", None)) for m in self.models]
        if len(self.models) != 1 or fused[0] is None:
            if any(f is not None for f in fused):
                pywarnings.warn("fusion weights ignored: they were fitted on one model's probabilities, "
                                "not on an ensemble's", RuntimeWarning, stacklevel=3)
            return None
        return fused[0]

    @property
    def model_name(self) -> str:
        return "+".join(m.name for m in self.models) or NO_MODEL_NAME

    @property
    def model_version(self) -> str:
        return "+".join(m.version for m in self.models) or __version__

    @property
    def threshold(self) -> float | None:
        if not self.models:
            return None
        value = (getattr(self.models[0].checkpoint, "extra", None) or {}).get("threshold")
        return None if value is None else float(value)

    @property
    def validity(self) -> list[dict[str, Any]] | None:
        """Per model, its held-out-source figures and one sentence (`evaluation.validity.statement`)."""
        if not self.models:
            return None
        out = []
        for m in self.models:
            record = validity_from_extra(getattr(m.checkpoint, "extra", None)) or {}
            out.append({"model": m.name, **record, "statement": statement(record)})
        return out

    def describe(self) -> dict[str, Any]:
        return {"model_name": self.model_name, "model_version": self.model_version,
                "class_names": self.class_names, "threshold": self.threshold,
                "models": [{"name": m.name, "version": m.version, "path": m.path} for m in self.models],
                "validity": self.validity, "device": str(self.device)}

    def warm_up(self) -> float:
        """Run each model once on a batch of zeros, and the explanation method once on the first model
        (the first forward and backward passes are slow: kernel choice, allocations); returns seconds
        taken. `covidct serve`, `covidct dicom-listen` and each Ray worker call it at start."""
        start = time.perf_counter()
        for m in self.models:
            shape = recipe_of(m.checkpoint).input_shape  # exports + times the backend once ("auto")
            rows = self.batch_size if getattr(m.checkpoint.model, "unit", "") == "slice" else 1
            # a full batch: the backend's working memory (ONNX Runtime's arena) reaches the size a
            # study needs now, not during the first study
            choose_backend(m.checkpoint.model, shape, self.backend).run(np.zeros((rows, *shape), np.float32),
                                                                        rows)
        if self.models and self.explain_enabled:
            first = self.models[0].checkpoint
            rows = self.n_key_slices if getattr(first.model, "unit", "") == "slice" else 1
            try:
                compute_heatmap(self.explain_method, first.model,
                                np.zeros((rows, *recipe_of(first).input_shape), np.float32), 0)
            except ExplainError:  # a method the model cannot support: predict() warns about it
                pass
        return time.perf_counter() - start

    # ---- the pipeline -------------------------------------------------------
    def predict(self, study: str | Path | Volume, *, series_uid: str | None = None,
                explain: bool | None = None) -> StudyResult:
        """Analyse one study (a path any covidct reader accepts, or a `Volume`)."""
        timings = dict.fromkeys(STAGES, 0.0)
        start = time.perf_counter()
        with timed(timings, "read"):
            volume = study if isinstance(study, Volume) else _read(study, series_uid)
        warns = list(volume.meta.warnings)
        probs, slice_probs, heatmap, quant = None, None, None, None
        do_explain = bool(self.models) and (self.explain_enabled if explain is None else explain)
        backend = None
        needs_analysis = self.quantitative or do_explain or self._slice_selection()
        outcome: QuantOutcome | None = None
        model_warns: list[str] = []
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="covidct-quant") as pool:
            # once per study, in one thread (mostly outside the GIL): the lungs first, beside the
            # models' preprocessing; then the lesions, zones and scores, beside the models, which
            # need only the lungs (they score the lung slices); the explanation and the report reuse it
            lungs_job = pool.submit(_timed_call, study_lungs, volume) if needs_analysis else None
            rest_job = pool.submit(_finish_analysis, volume, lungs_job) if lungs_job is not None else None
            with timed(timings, "preprocess"):
                prepared = [recipe_of(m.checkpoint).prepare_volume(volume) for m in self.models]
            if self.models:
                with self._lock:
                    lungs = self._lungs(lungs_job, model_warns)
                    probs, slice_probs, first = self._run_models(volume, timings, lungs, prepared)
                    backend = self._backend
                    outcome = _analysis_outcome(rest_job, timings)
                    if do_explain:
                        with timed(timings, "explain"):
                            heatmap, quant = self._explain(volume, model_warns, first,
                                                           outcome.analysis if outcome else None)
            else:
                outcome = _analysis_outcome(rest_job, timings)
        analysis = outcome.analysis if outcome is not None else None
        if self.quantitative and analysis is not None:
            warns.extend(f"quantitative CT: {w}" for w in analysis.warnings)
        warns.extend(model_warns)
        with timed(timings, "report"):
            result = self._assemble(volume, probs, slice_probs, heatmap, quant, warns, timings,
                                    outcome if self.quantitative else None)
        result.device, result.backend = str(self.device), backend
        result.timings = {k: round(v, 4) for k, v in timings.items()}
        result.timings["total"] = round(time.perf_counter() - start, 4)  # wall: two stages overlap
        return result

    def _slice_selection(self) -> bool:
        """True when slice models score only the slices showing lung (they need the lung labels)."""
        return self.lung_slices and any(getattr(m.checkpoint.model, "unit", "") == "slice"
                                        for m in self.models)

    def _lungs(self, lungs_job: Future | None, warns: list[str]) -> LungGrid | None:
        """The study's lungs (waiting for `study_lungs`) when slice models score only lung slices, else
        None; when they are not available (8-bit input, no lungs found) every slice counts, with a
        warning."""
        if not self._slice_selection() or lungs_job is None:
            return None
        found, _ = lungs_job.result()
        if isinstance(found, QuantOutcome):
            warns.append(f"every slice scored: no lung mask ({found.section.get('reason', '')})")
            return None
        return found

    def _run_models(self, volume: Volume, timings: dict[str, float], lungs: LungGrid | None,
                    prepared: Sequence[Any]) -> tuple[np.ndarray, np.ndarray | None, ScanPrediction]:
        """Ensemble probabilities, slice probabilities, and the first model's `ScanPrediction`, whose
        prepared input and slice probabilities the explanation reuses; ``prepared``: each model's
        recipe output for ``volume``. With ``lungs`` (the study's `LungGrid`), slice models score only
        the slices showing lung (`lung_slice_mask` on its labels); the others get NaN slice
        probabilities."""
        informative = None
        if lungs is not None:
            informative = lung_slice_mask(lungs.labels, lungs.spacing)
            informative = informative if informative.any() else None
        preds = [predict_volume(m.checkpoint, volume, batch_size=self.batch_size, backend=self.backend,
                                timings=timings, prepared=ready,
                                informative=informative if getattr(m.checkpoint.model, "unit", "") == "slice"
                                else None)
                 for m, ready in zip(self.models, prepared, strict=True)]
        self._backend = "+".join(dict.fromkeys(p.backend or "unknown" for p in preds))
        probs = np.mean(np.stack([np.asarray(p.probs, np.float64) for p in preds]), axis=0)
        slices = [p.slice_probs for p in preds]
        slice_probs = None
        if all(s is not None for s in slices) and len({s.shape for s in slices}) == 1:
            slice_probs = np.mean(np.stack([np.asarray(s, np.float64) for s in slices]), axis=0)
        return probs, slice_probs, preds[0]

    def _explain(self, volume: Volume, warns: list[str], first: ScanPrediction,
                 analysis: CTAnalysis | None) -> tuple[np.ndarray | None, dict[str, Any] | None]:
        """Heatmap on the volume grid and its share of the lung regions, from ``covidct.explain.explain``,
        which reads the lungs, lesions, zones and periphery from the study's ``analysis`` (none when
        the analysis is not available: no lung summary then).

        Slice models explain only the key slices (the ones the report shows), reusing the prepared
        input and slice probabilities of the model pass. A method the model cannot support
        (`ExplainError`, e.g. CAM on a 3D net) becomes a warning on the result; any other failure
        is a bug and propagates.
        """
        target = COVID if COVID in self.class_names else None
        slices: str | list[int] = "auto"
        if first.slice_probs is not None and target is not None:
            scores = first.slice_probs[:, self.class_names.index(target)].tolist()
            slices = key_slices(volume, scores, None, self.n_key_slices)
        try:
            exp = explain(self.models[0].checkpoint, volume, method=self.explain_method, slices=slices,
                          target=target, sanity=False, lungs=analysis is not None, analysis=analysis,
                          prediction=first)
        except ExplainError as exc:
            self._warn_once(warns, f"no {self.explain_method} explanation: {exc}")
            return None, None
        warns.extend(str(n) for n in (exp.extra or {}).get("notes", []))
        return exp.heatmap, distribution(exp)

    def _warn_once(self, warns: list[str], message: str) -> None:
        warns.append(message)
        if self._explain_warning != message:
            self._explain_warning = message
            pywarnings.warn(message, RuntimeWarning, stacklevel=3)

    def _assemble(self, volume: Volume, probs: np.ndarray | None, slice_probs: np.ndarray | None,
                  heatmap: np.ndarray | None, quant: dict[str, Any] | None, warns: list[str],
                  timings: dict[str, float], outcome: QuantOutcome | None = None) -> StudyResult:
        names = self.class_names
        covid_idx = names.index(COVID) if COVID in names else None
        if probs is None:
            predicted = None
            decision = {"rule": "none (no model)", "threshold": None, "positive_class": COVID,
                        "positive": None}
        else:
            predicted, decision = decide(probs, names, self.threshold)
        slice_scores = None
        if slice_probs is not None and slice_probs.ndim == 2 and covid_idx is not None:
            # slices without lung were not scored (NaN): no COVID-19 evidence, shown as 0
            slice_scores = [round(float(np.nan_to_num(v)), PROB_DIGITS) for v in slice_probs[:, covid_idx]]
        section = outcome.section if outcome else None
        lesions = outcome.lesion_labels if outcome else None
        if heatmap is None and lesions is not None and slice_scores is None:
            keys = lesion_key_slices(section, self.n_key_slices, volume.num_slices)
        else:
            keys = key_slices(volume, slice_scores, heatmap, self.n_key_slices)
        marks = {"pixel_mm": float(volume.spacing[2]), "letters": edge_letters(volume.direction)}
        if heatmap is None and lesions is not None:
            overlays = {k: lesion_overlay(volume, lesions, k) for k in keys}
        else:
            overlays = {k: overlay_image(volume, heatmap, k) for k in keys}
        overlays = {k: images.png_bytes(images.burn_marks(img, **marks)) for k, img in overlays.items()}
        clean = {k: images.png_bytes(images.burn_marks(overlay_image(volume, None, k), **marks))
                 for k in keys}
        headers = _source_headers(volume, warns)
        numbering = slice_numbering(volume.num_slices, headers)
        fraction = involvement(section)
        fused = self._fused(probs, covid_idx, fraction, warns)
        if fraction is None:
            fraction = _abnormal_fraction(quant)
        return StudyResult(
            source=str(volume.meta.source), series_uid=volume.meta.series_uid,
            study_uid=volume.meta.study_uid,
            model_name=self.model_name, model_version=self.model_version, class_names=list(names),
            probabilities={} if probs is None else {
                n: round(float(p), PROB_DIGITS) for n, p in zip(names, probs, strict=True)},
            predicted_class=predicted, decision=decision,
            covid_probability=None if covid_idx is None or probs is None else round(float(probs[covid_idx]),
                                                                                    PROB_DIGITS),
            slice_scores=slice_scores, key_slices=keys,
            abnormal_fraction=None if fraction is None else round(fraction, PROB_DIGITS), distribution=quant,
            num_slices=volume.num_slices, spacing_mm=[float(s) for s in volume.spacing], is_hu=volume.is_hu,
            warnings=warns, timings=timings,
            models=[{"name": m.name, "version": m.version} for m in self.models], quantitative=section,
            fused=fused, validity=self.validity, display=display_info(volume, headers, numbering),
            overlays=overlays, volume=volume, heatmap=heatmap, lesion_labels=lesions,
            lung_labels=outcome.analysis.lung_labels_full() if outcome and outcome.analysis else None,
            clean_images=clean, source_headers=headers,
            slice_numbers=numbering,
        )


    def _fused(self, probs: np.ndarray | None, covid_idx: int | None, fraction: float | None,
               warns: list[str]) -> dict[str, Any] | None:
        """The fused score from the checkpoint's fusion weights and the quantitative CT's involvement
        fraction (0-1); None without weights (no default guess) or without either input."""
        if self.fusion is None or probs is None or covid_idx is None:
            return None
        if fraction is None:
            warns.append("no fused score: the quantitative CT is not available for this study")
            return None
        value = self.fusion.apply(float(probs[covid_idx]), 100.0 * fraction)
        return {"probability": round(value, PROB_DIGITS), "label": FUSED_LABEL, **self.fusion.to_dict()}


# ---- helpers ------------------------------------------------------------------
def _timed_call(fn: Any, *args: Any) -> tuple[Any, float]:
    """``(fn(*args), seconds)``: a stage's own duration when it runs beside another."""
    begin = time.perf_counter()
    return fn(*args), time.perf_counter() - begin


def _finish_analysis(volume: Volume, lungs_job: Future) -> tuple[QuantOutcome, float]:
    """``quantify_study`` from the lungs ``lungs_job`` found, then the lung labels at the volume's
    resolution (beside the models, so the explanation and the masks find them drawn), and the seconds
    of all three steps."""
    lungs, lungs_s = lungs_job.result()
    begin = time.perf_counter()
    outcome = quantify_study(volume, lungs)
    if outcome.analysis is not None:
        outcome.analysis.lung_labels_full()  # computed once, kept by the analysis
    return outcome, lungs_s + time.perf_counter() - begin


def _analysis_outcome(rest_job: Future | None, timings: dict[str, float]) -> QuantOutcome | None:
    """Wait for the study's analysis (None when none was started); its seconds go to ``quantify``."""
    if rest_job is None:
        return None
    outcome, timings["quantify"] = rest_job.result()
    return outcome


def _source_headers(volume: Volume, warns: list[str]) -> list[Any] | None:
    """The DICOM source headers in slice order (`io.masks.volume_source_datasets`); None for other input,
    and None with a warning when the source files cannot be found again."""
    try:
        return volume_source_datasets(volume)
    except (MaskGeometryError, OSError) as exc:
        warns.append(f"source DICOM headers not found again ({exc}); slices numbered by position")
        return None


def _read(path: str | Path, series_uid: str | None) -> Volume:
    if not Path(path).exists():
        raise InputError(f"Study path {str(path)!r} does not exist; give a DICOM folder/zip or a NIfTI file.")
    return read_volume(path, series_uid=series_uid)


def _load(source: str | Path | Any) -> LoadedModel:
    if not isinstance(source, str | Path):
        ckpt = source
        return LoadedModel(ckpt, str(ckpt.model_name), _version(ckpt, None), None)
    path = Path(source)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist; pass a .ckpt written by "
                              "covidct train (or the demo).")
    ckpt = load_checkpoint(path)
    return LoadedModel(ckpt, str(ckpt.model_name), _version(ckpt, path), str(path))


def _version(ckpt: Any, path: Path | None) -> str:
    prov = getattr(ckpt, "provenance", None) or {}
    code = str(prov.get("code_version") or prov.get("covidct_version") or "unknown")
    if path is None:
        return code
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(HASH_CHUNK):
            digest.update(chunk)
    return f"{code}+{digest.hexdigest()[:VERSION_HASH_CHARS]}"


def decide(probs: np.ndarray, class_names: Sequence[str],
           threshold: float | None) -> tuple[str, dict[str, Any]]:
    """The predicted class: with a threshold, `apply_threshold` (COVID-19 when its probability reaches
    it, else the most likely other class); plain argmax without one."""
    names = list(class_names)
    if threshold is None or COVID not in names:
        idx = int(np.argmax(probs))
        return names[idx], {"rule": "argmax", "threshold": None, "positive_class": COVID,
                            "positive": names[idx] == COVID}
    covid_idx = names.index(COVID)
    idx = int(apply_threshold(np.asarray(probs)[None], covid_idx, float(threshold))[0])
    return names[idx], {"rule": "threshold", "threshold": float(threshold), "positive_class": COVID,
                        "positive": idx == covid_idx}


def key_slices(volume: Volume, slice_scores: list[float] | None, heatmap: np.ndarray | None,
               k: int) -> list[int]:
    """Slices to show: highest COVID-19 slice scores, else strongest heatmap, else the middle."""
    n = volume.num_slices
    if slice_scores is not None and len(slice_scores) == n:
        order = np.argsort(-np.asarray(slice_scores), kind="stable")
    elif heatmap is not None:
        order = np.argsort(-heatmap.reshape(n, -1).mean(axis=1), kind="stable")
    else:
        return [n // 2]
    return sorted(int(i) for i in order[: max(1, min(k, n))])


def overlay_image(volume: Volume, heatmap: np.ndarray | None, k: int, *, window: str = "lung",
                  alpha: float = images.DEFAULT_OVERLAY_ALPHA) -> np.ndarray:
    """Slice ``k`` in the lung window, heatmap blended on when there is one."""
    grey = images.to_grey(volume.array[k], window=window, is_hu=volume.is_hu)
    if heatmap is None:
        return grey
    return images.blend(grey, heatmap[k], alpha)


def distribution(exp: Any) -> dict[str, Any] | None:
    """Abnormal-lung summary from an `Explanation`: the HU-rule quantification (model-independent)
    when there is one, else the heatmap's; plus the words, lung volumes and the heatmap fraction."""
    quant = exp.quantification or {}
    main = quant.get("hu_rule") or quant.get("heatmap")
    if not main:
        return None
    out = {k: to_jsonable(main.get(k), max_array=MAX_JSON_ARRAY) for k in QUANT_KEYS}
    out["description"] = exp.description
    out["lung_volume_ml"] = to_jsonable(exp.lung_volume_ml)
    heat = quant.get("heatmap")
    out["heatmap_fraction"] = heat["total"]["fraction"] if heat else None
    return out


def _abnormal_fraction(quant: dict[str, Any] | None) -> float | None:
    """Total abnormal share of lung volume (``total.fraction`` of the distribution)."""
    total = (quant or {}).get("total")
    value = total.get("fraction") if isinstance(total, dict) else None
    return round(float(value), PROB_DIGITS) if isinstance(value, int | float) else None
