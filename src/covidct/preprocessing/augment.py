"""Training augmentation (COVIDNet-CT's, scanner variation, CovidCTNet's Perlin noise), driven by an
injected ``numpy.random.Generator`` or seed."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from covidct.errors import ConfigError, ShapeError
from covidct.preprocessing.transforms import UINT8_MAX, Box, CropToBox, Resize2D, ToChannels

AUG_PROBABILITY = 0.5
MAX_BOX_JITTER = 0.075
"""Fraction of the box width/height each box edge may move."""
MAX_ROTATION_DEG = 15.0
MAX_SHEAR = 0.2
INTENSITY_SHIFT = (-15.0, 15.0)
INTENSITY_SCALE = (0.85, 1.15)


class CovidNetCTAugment:
    """The COVIDNet-CT augmentation of one 8-bit slice (values 0..255) with its body box.

    Each step happens with probability ``prob`` (0.5), in this order: crop-box jitter (each
    edge by up to 7.5% of the box width/height), rotation (up to +-15 degrees about the box
    centre), shear (up to 0.2, along x or y), crop to the (transformed) box, intensity
    ``scale * (img + shift)`` with shift in [-15, 15) and scale in [0.85, 1.15) clipped to
    [0, 255], horizontal flip. Then 3 channels, /255 and bilinear resize to ``size``.

    Call: ``aug(image (H, W), box) -> (3, size, size)`` float32 in [0, 1]. The same generator
    state gives the same output.
    """

    def __init__(self, rng: np.random.Generator, *, size: int = 512, prob: float = AUG_PROBABILITY,
                 max_jitter: float = MAX_BOX_JITTER, max_rotation: float = MAX_ROTATION_DEG,
                 max_shear: float = MAX_SHEAR, antialias: bool = True) -> None:
        self.rng = rng
        self.size, self.prob = int(size), float(prob)
        self.max_jitter, self.max_rotation, self.max_shear = max_jitter, max_rotation, max_shear
        self.resize = Resize2D(self.size, antialias=antialias)

    def _happens(self) -> bool:
        return bool(self.rng.random() < self.prob)

    def jitter_box(self, box: Box, shape: tuple[int, int]) -> Box:
        """Move each edge by uniform(-j, j) * box width (x) or height (y); clip to the image."""
        h, w = shape
        x0, y0, x1, y1 = box
        jx, jy = self.max_jitter * (x1 - x0), self.max_jitter * (y1 - y0)
        d = self.rng.uniform(-1.0, 1.0, 4) * np.array([jx, jy, jx, jy])
        nx0, ny0 = int(np.clip(x0 + d[0], 0, w - 1)), int(np.clip(y0 + d[1], 0, h - 1))
        nx1, ny1 = int(np.clip(x1 + d[2], nx0 + 1, w)), int(np.clip(y1 + d[3], ny0 + 1, h))
        return nx0, ny0, nx1, ny1

    def _affine_matrix(self) -> np.ndarray | None:
        """Random rotation then shear as one 2x2 matrix in (row, col) order, or None."""
        mat = np.eye(2)
        if self._happens():
            theta = np.deg2rad(self.rng.uniform(-self.max_rotation, self.max_rotation))
            c, s = np.cos(theta), np.sin(theta)
            mat = np.array([[c, s], [-s, c]]) @ mat
        if self._happens():
            shear = self.rng.uniform(-self.max_shear, self.max_shear)
            along_x = bool(self.rng.random() < 0.5)
            shear_mat = [[1.0, 0.0], [shear, 1.0]] if along_x else [[1.0, shear], [0.0, 1.0]]
            mat = np.asarray(shear_mat) @ mat
        return None if np.allclose(mat, np.eye(2)) else mat

    @staticmethod
    def _warp(image: np.ndarray, box: Box, mat: np.ndarray) -> tuple[np.ndarray, Box]:
        """Apply ``mat`` about the box centre to image and box (enclosing box of the corners)."""
        h, w = image.shape
        x0, y0, x1, y1 = box
        centre = np.array([(y0 + y1) / 2.0, (x0 + x1) / 2.0])
        inv = np.linalg.inv(mat)
        offset = centre - inv @ centre
        warped = ndimage.affine_transform(image, inv, offset=offset, order=1, mode="constant",
                                          cval=float(image.min()))
        corners = np.array([[y0, x0], [y0, x1], [y1, x0], [y1, x1]], dtype=float)
        moved = (corners - centre) @ mat.T + centre
        ny0, nx0 = np.floor(moved.min(axis=0)).astype(int)
        ny1, nx1 = np.ceil(moved.max(axis=0)).astype(int)
        nx0, ny0 = min(max(nx0, 0), w - 1), min(max(ny0, 0), h - 1)
        return warped, (nx0, ny0, max(min(nx1, w), nx0 + 1), max(min(ny1, h), ny0 + 1))

    def __call__(self, image: np.ndarray, box: Box) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ShapeError(f"CovidNetCTAugment expects one 2D slice (H, W), got shape {image.shape}.")
        if self._happens():
            box = self.jitter_box(box, image.shape)
        mat = self._affine_matrix()
        if mat is not None:
            image, box = self._warp(image, box, mat)
        image = CropToBox()(image, box)
        if self._happens():
            shift = self.rng.uniform(*INTENSITY_SHIFT)
            scale = self.rng.uniform(*INTENSITY_SCALE)
            image = np.clip(scale * (image + shift), 0.0, UINT8_MAX)
        if self._happens():
            image = image[:, ::-1]
        return self.resize(ToChannels(3)(image) / UINT8_MAX).astype(np.float32)


SCANNER_PROBABILITY = 0.3
GAMMA_RANGE = (0.7, 1.5)
CONTRAST_RANGE = (0.7, 1.3)
BLUR_SIGMA_RANGE = (0.5, 1.5)
"""Gaussian blur sigma in pixels of the input image."""
NOISE_STD_RANGE = (2.0, 10.0)
"""Gaussian noise standard deviation in grey levels (0..255)."""
JPEG_QUALITY_RANGE = (15, 70)
RESOLUTION_RANGE = (0.3, 0.7)
"""Down-sampling factor before sampling back up to the original size."""


class ScannerAugment:
    """Seeded intensity and quality changes a new scanner or export path brings, on one 8-bit slice.

    Each step happens with probability ``prob`` (0.3), in this order: gamma
    ``255 * (x/255) ** g`` (g in [0.7, 1.5]); contrast about the mean (factor in [0.7, 1.3]);
    Gaussian blur (sigma 0.5-1.5 px); Gaussian noise (std 2-10 grey levels); JPEG re-compression
    (quality 15-70, Pillow); resolution loss (bilinear down to 30-70% and back to the same shape).
    Values stay in [0, 255] and the shape is unchanged, so boxes stay valid.

    Call: ``aug(image (H, W)) -> (H, W)`` float32 in [0, 255]; the same generator state gives the
    same output.
    """

    def __init__(self, rng: np.random.Generator, *, prob: float = SCANNER_PROBABILITY) -> None:
        self.rng, self.prob = rng, float(prob)

    def _happens(self) -> bool:
        return bool(self.rng.random() < self.prob)

    @staticmethod
    def gamma(image: np.ndarray, g: float) -> np.ndarray:
        return UINT8_MAX * (np.clip(image, 0.0, UINT8_MAX) / UINT8_MAX) ** g

    @staticmethod
    def contrast(image: np.ndarray, factor: float) -> np.ndarray:
        mean = float(image.mean())
        return mean + factor * (image - mean)

    @staticmethod
    def jpeg(image: np.ndarray, quality: int) -> np.ndarray:
        import io

        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(np.clip(image, 0, UINT8_MAX).round().astype(np.uint8)).save(
            buffer, format="JPEG", quality=int(quality)
        )
        buffer.seek(0)
        return np.asarray(Image.open(buffer), dtype=np.float32)

    @staticmethod
    def resolution(image: np.ndarray, factor: float) -> np.ndarray:
        h, w = image.shape
        small = ndimage.zoom(image, factor, order=1)
        return ndimage.zoom(small, (h / small.shape[0], w / small.shape[1]), order=1)[:h, :w]

    def __call__(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image, dtype=np.float32)
        if image.ndim != 2:
            raise ShapeError(f"ScannerAugment expects one 2D slice (H, W), got shape {image.shape}.")
        if self._happens():
            image = self.gamma(image, self.rng.uniform(*GAMMA_RANGE))
        if self._happens():
            image = self.contrast(image, self.rng.uniform(*CONTRAST_RANGE))
        if self._happens():
            image = ndimage.gaussian_filter(image, self.rng.uniform(*BLUR_SIGMA_RANGE))
        if self._happens():
            image = image + self.rng.normal(0.0, self.rng.uniform(*NOISE_STD_RANGE), image.shape)
        if self._happens():
            image = self.jpeg(image, int(self.rng.integers(*JPEG_QUALITY_RANGE)))
        if self._happens():
            image = self.resolution(image, self.rng.uniform(*RESOLUTION_RANGE))
        return np.clip(image, 0.0, UINT8_MAX).astype(np.float32)


# --------------------------------------------------------------------------------------------
# Perlin noise (CovidCTNet denoiser training corrupts control slices with it)
# --------------------------------------------------------------------------------------------
def _fade(t: np.ndarray) -> np.ndarray:
    """Perlin's quintic fade curve 6t^5 - 15t^4 + 10t^3."""
    return t * t * t * (t * (t * 6 - 15) + 10)


def _perlin_octave(
    shape: tuple[int, int], cells: tuple[float, float], rng: np.random.Generator
) -> np.ndarray:
    """One octave of 2D gradient noise, ``cells`` lattice cells per axis; values in ~[-0.71, 0.71]."""
    ys = np.arange(shape[0]) * (cells[0] / shape[0])
    xs = np.arange(shape[1]) * (cells[1] / shape[1])
    y0, x0 = np.floor(ys).astype(int), np.floor(xs).astype(int)
    fy, fx = (ys - y0)[:, None], (xs - x0)[None, :]
    angles = rng.uniform(0.0, 2 * np.pi, (y0.max() + 2, x0.max() + 2))
    gy, gx = np.sin(angles), np.cos(angles)

    def corner(dy: int, dx: int) -> np.ndarray:
        iy, ix = (y0 + dy)[:, None], (x0 + dx)[None, :]
        return gy[iy, ix] * (fy - dy) + gx[iy, ix] * (fx - dx)

    u, v = _fade(fx), _fade(fy)
    top = corner(0, 0) * (1 - u) + corner(0, 1) * u
    bottom = corner(1, 0) * (1 - u) + corner(1, 1) * u
    return top * (1 - v) + bottom * v


def perlin_noise(
    shape: Sequence[int],
    *,
    scale: float = 32.0,
    octaves: int = 4,
    persistence: float = 0.5,
    lacunarity: float = 2.0,
    seed: int = 0,
    unit_range: bool = False,
) -> np.ndarray:
    """Seeded fractal Perlin (gradient) noise, float32, of a 2D ``(H, W)`` or 3D ``(S, H, W)`` shape.

    Octave ``k`` has a feature size (lattice period) of ``scale / lacunarity**k`` pixels and an
    amplitude of ``persistence**k``; the octaves are summed, divided by the total amplitude and by
    the largest value one 2D octave can take (sqrt(2)/2), and clipped, so values lie in [-1, 1]
    (or in [0, 1] with ``unit_range=True``, via (x + 1) / 2). For a 3D shape every slice gets its
    own 2D field (seeded from ``seed``), as the CovidCTNet denoiser corrupts slices one by one.
    The same arguments always return the same array.
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) not in (2, 3) or min(shape) < 1:
        raise ShapeError(
            f"perlin_noise needs a 2D (H, W) or 3D (S, H, W) shape of positive sizes, got {shape}."
        )
    if scale <= 0 or octaves < 1 or lacunarity <= 0:
        raise ConfigError(
            f"perlin_noise needs scale > 0, octaves >= 1, lacunarity > 0; got {scale}, {octaves}, "
            f"{lacunarity}."
        )
    if len(shape) == 3:
        seeds = np.random.SeedSequence(seed).generate_state(shape[0])
        return np.stack(
            [
                perlin_noise(
                    shape[1:],
                    scale=scale,
                    octaves=octaves,
                    persistence=persistence,
                    lacunarity=lacunarity,
                    seed=int(s),
                    unit_range=unit_range,
                )
                for s in seeds
            ]
        )
    rng = np.random.default_rng(seed)
    total = np.zeros(shape, dtype=np.float64)
    amplitude, period, norm = 1.0, float(scale), 0.0
    for _ in range(octaves):
        cells = (max(shape[0] / period, 1e-6), max(shape[1] / period, 1e-6))
        total += amplitude * _perlin_octave(shape, cells, rng)
        norm += amplitude
        amplitude *= persistence
        period /= lacunarity
    noise = np.clip(total / (norm * math.sqrt(0.5)), -1.0, 1.0)
    if unit_range:
        noise = (noise + 1.0) / 2.0
    return noise.astype(np.float32)
