"""Heatmap methods, registered by name, written against any torch ``nn.Module`` classifier.

Input layouts (``x`` is a float tensor with a batch axis):

* ``"NCHW"``  slice models: heatmaps (N, H, W)
* ``"NCDHW"`` 3D scan models: heatmaps (N, D, H, W)
* ``"NSCHW"`` slice-stack scan models (ai-corona): heatmaps (N, S, H, W)

Every method returns a `HeatmapResult` whose ``heatmap`` is in input resolution, float32 in [0, 1]
(each item divided by its maximum after clipping negatives), and whose ``target`` holds the class
index explained per item (the predicted class unless given).
"""

from __future__ import annotations

import contextlib
import copy
import itertools
import weakref
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from covidct.errors import ExplainError, UnknownNameError, unknown_name_message

LAYOUTS = ("NCHW", "NCDHW", "NSCHW")
DEFAULT_BATCH = 16
OCCLUSION_PATCH_FRACTION = {2: 1.0 / 8.0, 3: 1.0 / 4.0}
"""Default occlusion patch edge as a fraction of each spatial axis, by number of spatial axes; the
default stride is one patch (64 non-overlapping windows); pass ``stride`` for overlapping windows."""
CRITICAL_SEGMENTS = 40
CRITICAL_MAX_REGIONS = 8
CRITICAL_GRID = 4
"""3D inputs: critical-factor regions are a CRITICAL_GRID^3 grid of blocks."""
IG_STEPS = 16


@dataclass
class HeatmapResult:
    """A method's output: ``heatmap`` (N, *spatial) float32 in [0, 1], ``target`` (N,) class indices."""

    method: str
    heatmap: np.ndarray
    target: np.ndarray
    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------- helpers
def infer_layout(model: nn.Module, x: torch.Tensor) -> str:
    """The layout of ``x`` for ``model``: NSCHW for ai-corona-style slice stacks, else by rank."""
    if x.ndim == 5 and getattr(model, "recipe_name", "") == "ai-corona":
        return "NSCHW"
    if x.ndim == 4:
        return "NCHW"
    if x.ndim == 5:
        return "NCDHW"
    raise ExplainError(
        f"Cannot explain an input of shape {tuple(x.shape)}: expected (N, C, H, W), (N, C, D, H, W) or "
        "(N, S, C, H, W). Prepare inputs with the model's recipe and add the batch axis."
    )


def spatial_shape(x: torch.Tensor, layout: str) -> tuple[int, ...]:
    """Heatmap shape without N: (H, W), (D, H, W) or (S, H, W)."""
    if layout == "NSCHW":
        return (x.shape[1], x.shape[3], x.shape[4])
    return tuple(x.shape[2:])


def expand_mask(mask: torch.Tensor, layout: str) -> torch.Tensor:
    """Broadcast a spatial mask (B, *spatial) against an input of ``layout`` (adds the channel axis)."""
    return mask.unsqueeze(2) if layout == "NSCHW" else mask.unsqueeze(1)


def normalise01(heat: np.ndarray) -> np.ndarray:
    """Clip negatives and divide each item (axis 0) by its maximum; all-zero items stay zero."""
    h = np.clip(np.nan_to_num(np.asarray(heat, dtype=np.float32)), 0.0, None)
    peak = h.reshape(h.shape[0], -1).max(axis=1).reshape((-1,) + (1,) * (h.ndim - 1))
    safe = np.where(peak > 0, peak, 1.0)
    return np.where(peak > 0, h / safe, 0.0).astype(np.float32)


@torch.no_grad()
def predict_probs(model: nn.Module, x: torch.Tensor, batch_size: int = DEFAULT_BATCH) -> torch.Tensor:
    """Softmax probabilities (N, C) in eval mode, ``batch_size`` items at a time."""
    model.eval()
    return torch.cat(
        [torch.softmax(model(x[i : i + batch_size]).float(), 1) for i in range(0, len(x), batch_size)]
    )


def resolve_target(model: nn.Module, x: torch.Tensor, target: int | None) -> torch.Tensor:
    """(N,) long: ``target`` for every item, or each item's predicted class (one forward pass, run
    only when it is needed: no target, or a model that does not say how many classes it has)."""
    classes = len(getattr(model, "class_names", ()) or ())
    if target is None or not classes:
        probs = predict_probs(model, x)
        if target is None:
            return probs.argmax(1)
        classes = probs.shape[1]
    if not 0 <= target < classes:
        raise ExplainError(f"Target class index {target} is out of range for a {classes}-class model.")
    return torch.full((len(x),), int(target), dtype=torch.long)


def get_cam_layer(model: nn.Module, layer: str | None = None) -> nn.Module:
    """The module named ``layer`` or ``model.cam_layer``; ExplainError when absent."""
    name = layer or getattr(model, "cam_layer", "") or ""
    if not name:
        raise ExplainError(
            f"{type(model).__name__} has no cam_layer, so Grad-CAM/CAM do not know which feature maps "
            "to use. Give layer='dotted.module.name' or use occlusion / integrated-gradients instead."
        )
    try:
        return model.get_submodule(name)
    except AttributeError as exc:
        raise ExplainError(
            f"cam_layer {name!r} is not a submodule of {type(model).__name__}: {exc}."
        ) from exc


def _upsample(maps: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    """(B, *s) -> (B, *size) by (bi/tri)linear interpolation."""
    mode = "bilinear" if len(size) == 2 else "trilinear"
    return F.interpolate(maps.unsqueeze(1).float(), size=size, mode=mode, align_corners=False).squeeze(1)


def _maps_to_heatmap(cam: torch.Tensor, x: torch.Tensor, layout: str) -> np.ndarray:
    """Low-resolution maps -> (N, *spatial) numpy at input resolution.

    ``cam`` is (N, *s) with len(s) == len(spatial), or (N*S, h, w) for NSCHW.
    """
    spatial = spatial_shape(x, layout)
    if layout == "NSCHW":
        n, s = x.shape[:2]
        return _upsample(cam, spatial[1:]).reshape(n, s, *spatial[1:]).detach().cpu().numpy()
    return _upsample(cam, spatial).detach().cpu().numpy()


@contextlib.contextmanager
def _parameters_frozen(model: nn.Module) -> Iterator[None]:
    """``requires_grad`` off on every parameter of ``model`` for the block, then restored: autograd then
    records only the operations that depend on a tensor that asks for a gradient (the cam layer's
    output), so the layers below it keep no activations for a backward pass that never reaches them."""
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def _capture(model: nn.Module, module: nn.Module, x: torch.Tensor, target: torch.Tensor, grads: bool):
    """Run the model, returning (activations, gradients of the target logits w.r.t. them or None).

    With ``grads`` the layer's output is passed on as a new leaf tensor and the parameters ask for no
    gradient (`_parameters_frozen`): the backward pass runs from the logits down to that layer only, and
    the layers below it keep nothing for it (on a 512 px slice they are most of the cost: 3 CT-2 S
    slices touched ~715 MB of memory with the parameters' graph, issue 21).
    """
    store: dict[str, torch.Tensor] = {}

    def hook(_m: nn.Module, _i: Any, out: Any) -> Any:
        if grads and isinstance(out, torch.Tensor) and torch.is_grad_enabled():
            out = out.detach().requires_grad_(True)  # the graph is cut here
        store["act"] = out
        return out

    handle = module.register_forward_hook(hook)
    try:
        with torch.set_grad_enabled(grads), _parameters_frozen(model):
            logits = model(x)
            if grads and "act" in store and store["act"].requires_grad:
                logits.gather(1, target.view(-1, 1)).sum().backward()
    finally:
        handle.remove()
        model.zero_grad(set_to_none=True)
    if "act" not in store:
        raise ExplainError("The cam_layer was never called in the forward pass; it cannot be explained.")
    act = store["act"]
    grad = act.grad if grads else None
    return act.detach(), (grad.detach() if grad is not None else None)


# ---------------------------------------------------------------------------- methods
def grad_cam(
    model: nn.Module, x: torch.Tensor, target: int | None = None, *, layer: str | None = None, **_: Any
) -> HeatmapResult:
    """Grad-CAM (Selvaraju et al.): ReLU(sum_k mean(dy_c/dA_k) A_k) at ``model.cam_layer``, 2D or 3D."""
    layout = infer_layout(model, x)
    module = get_cam_layer(model, layer)
    tgt = resolve_target(model, x, target)
    model.eval()
    act, grad = _capture(model, module, x, tgt, grads=True)
    if grad is None:
        raise ExplainError("No gradient reached the cam_layer; is the model frozen with requires_grad=False?")
    weights = grad.mean(dim=tuple(range(2, grad.ndim)), keepdim=True)
    cam = F.relu((weights * act).sum(1))
    return HeatmapResult("gradcam", normalise01(_maps_to_heatmap(cam, x, layout)), tgt.numpy())


def class_activation_map(
    model: nn.Module, x: torch.Tensor, target: int | None = None, *, layer: str | None = None, **_: Any
) -> HeatmapResult:
    """CAM (Zhou et al.): sum_k w_ck A_k with the weights of the linear head ``model.fc`` (2D maps only)."""
    layout = infer_layout(model, x)
    head = getattr(model, "fc", None)
    if not isinstance(head, nn.Linear):
        raise ExplainError(
            f"CAM needs a global-average-pooling + linear head named 'fc'; {type(model).__name__} has none. "
            "Use --method gradcam, which works with any head."
        )
    if layout == "NCDHW":
        raise ExplainError(
            f"CAM is implemented for 2D feature maps (slice models, ai-corona); {type(model).__name__} is a "
            "3D model. Use --method gradcam for 3D models."
        )
    module = get_cam_layer(model, layer)
    tgt = resolve_target(model, x, target)
    model.eval()
    act, _ = _capture(model, module, x, tgt, grads=False)
    if act.ndim != 4 or act.shape[1] != head.in_features:
        raise ExplainError(
            f"CAM needs 2D feature maps with {head.in_features} channels at cam_layer; "
            f"got {tuple(act.shape)}."
        )
    per_item = tgt.repeat_interleave(act.shape[0] // len(x))
    weights = head.weight.detach()[per_item]  # (B, K)
    cam = F.relu(torch.einsum("bk,bkhw->bhw", weights, act))
    return HeatmapResult("cam", normalise01(_maps_to_heatmap(cam, x, layout)), tgt.numpy())


def _patch_slices(shape: tuple[int, ...], patch: tuple[int, ...], stride: tuple[int, ...]) -> list[tuple]:
    """All patch windows (tuples of slices) covering ``shape``; the last window touches the far edge."""
    starts = []
    for size, p, s in zip(shape, patch, stride, strict=True):
        axis = list(range(0, max(size - p, 0) + 1, s))
        if axis[-1] + p < size:
            axis.append(size - p)
        starts.append(axis)
    return [
        tuple(slice(a, a + p) for a, p in zip(st, patch, strict=True)) for st in itertools.product(*starts)
    ]


def occlusion(
    model: nn.Module,
    x: torch.Tensor,
    target: int | None = None,
    *,
    patch: int | tuple[int, ...] | None = None,
    stride: int | tuple[int, ...] | None = None,
    baseline: float = 0.0,
    batch_size: int = DEFAULT_BATCH,
    **_: Any,
) -> HeatmapResult:
    """Occlusion sensitivity (Zeiler & Fergus): drop of the target probability when a patch is set to
    ``baseline``, averaged over the patches covering each voxel; occluded copies run in batches."""
    layout = infer_layout(model, x)
    spatial = spatial_shape(x, layout)
    tgt = resolve_target(model, x, target)
    fraction = OCCLUSION_PATCH_FRACTION[len(spatial)]
    p = _as_tuple(patch, spatial, lambda n: max(1, round(n * fraction)))
    s = _as_tuple(stride, spatial, None) if stride is not None else p
    windows = _patch_slices(spatial, p, s)
    heat = np.zeros((len(x), *spatial), np.float32)
    for i in range(len(x)):
        item, t = x[i : i + 1], int(tgt[i])
        base_prob = float(predict_probs(model, item)[0, t])
        total, count = np.zeros(spatial, np.float32), np.zeros(spatial, np.float32)
        for start in range(0, len(windows), batch_size):
            chunk = windows[start : start + batch_size]
            masks = torch.zeros((len(chunk), *spatial), dtype=torch.bool)
            for j, w in enumerate(chunk):
                masks[(j, *w)] = True
            occluded = torch.where(
                expand_mask(masks, layout), torch.tensor(baseline), item.expand(len(chunk), *item.shape[1:])
            )
            drops = base_prob - predict_probs(model, occluded, batch_size)[:, t].numpy()
            for j, w in enumerate(chunk):
                total[w] += drops[j]
                count[w] += 1
        heat[i] = total / np.maximum(count, 1)
    return HeatmapResult(
        "occlusion", normalise01(heat), tgt.numpy(), {"patch": p, "stride": s, "windows": len(windows)}
    )


def _as_tuple(
    value: int | tuple[int, ...] | None, spatial: tuple[int, ...], default: Callable | None
) -> tuple:
    if value is None:
        return tuple(default(n) for n in spatial)  # type: ignore[misc]
    if isinstance(value, int):
        return tuple(min(value, n) for n in spatial)
    if len(value) != len(spatial):
        raise ExplainError(f"Patch/stride {value} has {len(value)} axes but the input has {len(spatial)}.")
    return tuple(min(int(v), n) for v, n in zip(value, spatial, strict=True))


def integrated_gradients(
    model: nn.Module,
    x: torch.Tensor,
    target: int | None = None,
    *,
    steps: int = IG_STEPS,
    baseline: float = 0.0,
    **_: Any,
) -> HeatmapResult:
    """Integrated gradients (Sundararajan et al.), Riemann midpoint rule with ``steps`` steps from a
    constant ``baseline``; |attribution| summed over channels."""
    layout = infer_layout(model, x)
    tgt = resolve_target(model, x, target)
    model.eval()
    chan_axis = 2 if layout == "NSCHW" else 1
    heat = []
    for i in range(len(x)):
        item = x[i : i + 1]
        base = torch.full_like(item, baseline)
        alphas = (torch.arange(steps, dtype=item.dtype) + 0.5) / steps
        path = (base + alphas.view(-1, *([1] * (item.ndim - 1))) * (item - base)).requires_grad_(True)
        logits = model(path)
        (grad,) = torch.autograd.grad(logits[:, int(tgt[i])].sum(), path)
        attr = ((item - base) * grad.mean(0, keepdim=True)).abs().sum(chan_axis)
        heat.append(attr.detach().numpy())
    model.zero_grad(set_to_none=True)
    return HeatmapResult(
        "integrated-gradients", normalise01(np.concatenate(heat)), tgt.numpy(), {"steps": steps}
    )


def residual(model: nn.Module, x: torch.Tensor, target: int | None = None, **_: Any) -> HeatmapResult:
    """CovidCTNet residual map |x - denoiser(x)| per slice, for a denoiser or a full covidctnet model.

    ``x``: slices (N, 1, H, W) -> (N, H, W); or a volume (N, 1, D, H, W) -> (N, D, H, W).
    """
    denoiser = getattr(model, "denoiser", None)
    if denoiser is None and getattr(model, "task", "") == "denoising":
        denoiser = model
    if denoiser is None:
        raise ExplainError(
            f"Residual maps need a CovidCTNet denoiser; {type(model).__name__} has none. Use a "
            "'covidctnet' or 'covidctnet-denoiser' checkpoint, or another method."
        )
    denoiser.eval()
    with torch.no_grad():
        if x.ndim == 5:
            n, c, d, h, w = x.shape
            slices = x.permute(0, 2, 1, 3, 4).reshape(n * d, c, h, w)
            res = _denoise_residual(denoiser, slices).reshape(n, d, h, w)
        elif x.ndim == 4:
            res = _denoise_residual(denoiser, x)
        else:
            raise ExplainError(f"Residual maps need (N, 1, H, W) or (N, 1, D, H, W), got {tuple(x.shape)}.")
    tgt = torch.zeros(len(x), dtype=torch.long) if target is None else torch.full((len(x),), target)
    if getattr(model, "task", "classification") == "classification":
        tgt = resolve_target(model, x, target) if x.ndim == 5 else tgt
    return HeatmapResult("residual", normalise01(res.numpy()), tgt.numpy())


def _denoise_residual(denoiser: nn.Module, slices: torch.Tensor) -> torch.Tensor:
    """|slices - denoiser(slices)| (B, H, W), DEFAULT_BATCH slices at a time."""
    outs = [denoiser(slices[i : i + DEFAULT_BATCH]) for i in range(0, len(slices), DEFAULT_BATCH)]
    return (slices - torch.cat(outs)).abs().sum(1)


# ---------------------------------------------------------------------------- critical factors
@dataclass
class CriticalFactors:
    """Greedy smallest region set that alone keeps the decision, for one item.

    ``regions``: int (*spatial) region labels; ``selected``: region labels in the order chosen;
    probabilities of the explained class for the original input, with only the selected regions
    kept (rest set to the baseline), and with the selected regions removed.
    """

    regions: np.ndarray
    selected: list[int]
    prob_original: float
    prob_kept: float
    prob_removed: float
    decision_kept: bool
    forward_passes: int

    def summary(self) -> dict[str, Any]:
        return {
            "n_regions": int(self.regions.max()) + 1,
            "selected": [int(s) for s in self.selected],
            "prob_original": round(self.prob_original, 5),
            "prob_kept": round(self.prob_kept, 5),
            "prob_removed": round(self.prob_removed, 5),
            "decision_kept": self.decision_kept,
            "forward_passes": self.forward_passes,
        }


def make_regions(item: torch.Tensor, layout: str, n_segments: int = CRITICAL_SEGMENTS) -> np.ndarray:
    """Region labels 0..R-1 over the spatial axes: SLIC superpixels for 2D items, a grid for 3D."""
    spatial = spatial_shape(item, layout)
    if len(spatial) == 2:
        from skimage.segmentation import slic

        image = item[0, 0].detach().numpy().astype(np.float64)
        labels = slic(image, n_segments=n_segments, compactness=0.1, channel_axis=None, start_label=0)
        return np.unique(labels, return_inverse=True)[1].reshape(spatial)
    grids = [np.minimum(np.arange(n) * CRITICAL_GRID // n, CRITICAL_GRID - 1) for n in spatial]
    zz, yy, xx = np.meshgrid(*grids, indexing="ij")
    return (zz * CRITICAL_GRID + yy) * CRITICAL_GRID + xx


def critical_factors_item(
    model: nn.Module,
    item: torch.Tensor,
    target: int,
    regions: np.ndarray,
    *,
    layout: str,
    max_regions: int = CRITICAL_MAX_REGIONS,
    baseline: float = 0.0,
    batch_size: int = DEFAULT_BATCH,
) -> CriticalFactors:
    """Greedy forward selection: add the region that most raises p(target) when only the chosen regions
    are kept, until the kept input is again classified as ``target`` (or ``max_regions`` is reached)."""
    region_t = torch.as_tensor(regions)
    labels = [int(v) for v in np.unique(regions)]
    fill = torch.tensor(baseline, dtype=item.dtype)
    p_orig = float(predict_probs(model, item)[0, target])
    chosen: list[int] = []
    passes, decided, p_kept = 1, False, 0.0

    def keep_only(sets: list[list[int]]) -> torch.Tensor:
        masks = torch.stack([torch.isin(region_t, torch.tensor(s)) for s in sets])
        return torch.where(expand_mask(masks, layout), item.expand(len(sets), *item.shape[1:]), fill)

    while len(chosen) < min(max_regions, len(labels)) and not decided:
        candidates = [r for r in labels if r not in chosen]
        probs = predict_probs(model, keep_only([[*chosen, r] for r in candidates]), batch_size)
        passes += len(candidates)
        best = int(probs[:, target].argmax())
        chosen.append(candidates[best])
        p_kept = float(probs[best, target])
        decided = int(probs[best].argmax()) == target
    removed_mask = expand_mask(torch.isin(region_t, torch.tensor(chosen))[None], layout)
    p_removed = float(predict_probs(model, torch.where(removed_mask, fill, item))[0, target])
    return CriticalFactors(regions, chosen, p_orig, p_kept, p_removed, decided, passes + 1)


def critical_factors(
    model: nn.Module,
    x: torch.Tensor,
    target: int | None = None,
    *,
    n_segments: int = CRITICAL_SEGMENTS,
    max_regions: int = CRITICAL_MAX_REGIONS,
    baseline: float = 0.0,
    batch_size: int = DEFAULT_BATCH,
    **_: Any,
) -> HeatmapResult:
    """Critical factors: per item the greedy smallest region set keeping the decision. Heat: chosen
    regions, the first chosen hottest (1, then decreasing linearly), others 0."""
    layout = infer_layout(model, x)
    tgt = resolve_target(model, x, target)
    heat = np.zeros((len(x), *spatial_shape(x, layout)), np.float32)
    results = []
    for i in range(len(x)):
        regions = make_regions(x[i : i + 1], layout, n_segments)
        res = critical_factors_item(
            model,
            x[i : i + 1],
            int(tgt[i]),
            regions,
            layout=layout,
            max_regions=max_regions,
            baseline=baseline,
            batch_size=batch_size,
        )
        for rank, lab in enumerate(res.selected):
            heat[i][regions == lab] = 1.0 - rank / max(len(res.selected), 1)
        results.append(res)
    return HeatmapResult(
        "critical-factors", normalise01(heat), tgt.numpy(), {"items": [r.summary() for r in results]}
    )


# ---------------------------------------------------------------------------- registry
Method = Callable[..., HeatmapResult]
METHODS: dict[str, Method] = {
    "gradcam": grad_cam,
    "cam": class_activation_map,
    "occlusion": occlusion,
    "critical-factors": critical_factors,
    "residual": residual,
    "integrated-gradients": integrated_gradients,
}


def list_methods() -> list[str]:
    """Names of the registered heatmap methods."""
    return sorted(METHODS)


def get_method(name: str) -> Method:
    """The method registered as ``name``; UnknownNameError (listing valid names) otherwise."""
    if name not in METHODS:
        raise UnknownNameError(unknown_name_message("explanation method", name, list(METHODS)))
    return METHODS[name]


def compute_heatmap(
    method: str, model: nn.Module, x: torch.Tensor | np.ndarray, target: int | None = None, **options: Any
) -> HeatmapResult:
    """Run the method named ``method`` on ``model`` for inputs ``x`` (see the module doc for layouts)."""
    fn = get_method(method)
    x = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x, dtype=torch.float32)
    torch.set_flush_denormal(True)  # as `predict_tensor`: denormal floats slow CPU kernels 50-100x
    return fn(cpu_model(model), x.cpu(), target, **options)


_CPU_COPIES: weakref.WeakKeyDictionary[nn.Module, nn.Module] = weakref.WeakKeyDictionary()


def cpu_model(model: nn.Module) -> nn.Module:
    """``model`` when it is on CPU, else a CPU copy made once per model: the methods are CPU code (hooks,
    numpy maps), so a model running inference on CUDA (``--device cuda``) is explained on CPU."""
    try:
        on_cpu = next(model.parameters()).device.type == "cpu"
    except StopIteration:
        return model
    if on_cpu:
        return model
    if model not in _CPU_COPIES:
        _CPU_COPIES[model] = copy.deepcopy(model).cpu().eval()
    return _CPU_COPIES[model]
