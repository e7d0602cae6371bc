"""Seeded random-resized-crop augmentation of flattened images, in torch ops (no torchvision).

The paper's CIFAR-10 mini-batch runs train on ``RandomResizedCrop(32, scale=(0.08, 1))`` of every
image (docs/paper-protocol.md); this module reproduces that transform's geometry:

1. **Box** (per image, :func:`sample_boxes`): up to 10 attempts draw an area fraction
   s ~ U(scale) and a log aspect ratio log r ~ U(log ratio); the box is w = round(√(s·H·W·r)),
   h = round(√(s·H·W/r)); the first attempt with 0 < w ≤ W and 0 < h ≤ H wins and its corner is
   uniform, top ∈ {0 … H − h}, left ∈ {0 … W − w}. When all 10 fail, the centred box of the whole
   image clipped to the ratio range (w = W, h = round(W / r_min) if W/H < r_min; h = H,
   w = round(H·r_max) if W/H > r_max; else the whole image). Rounding is half-to-even.
2. **Resize** (:func:`resized_crop`): the crop (h × w) is resized to the image's own size (H × W) by
   bilinear interpolation with half-pixel centres (``torch.nn.functional.interpolate(mode="bilinear",
   align_corners=False)``): output row i samples the crop at y = max((i + ½)·h/H − ½, 0),
   y₀ = ⌊y⌋, y₁ = min(y₀ + 1, h − 1), weights (1 − (y − y₀), y − y₀); columns likewise. Crops are never
   larger than the output, so no antialiasing filter is involved.

The features the trainers hold are standardised per feature, x_std = (x − μ)/σ'
(:func:`trainers.data.standardization`); :class:`RandomResizedCrop` undoes that map, crops and
resizes in pixel space, and standardises again — the order of the paper's pipeline (crop, then
normalise). No horizontal flips (the paper uses none).

**Seeding.** The boxes of the images of update t (1-based step) of a run with seed s come from
``numpy.random.default_rng([s, t, STREAM])``: a pure function of (seed, step), so a resumed run
draws exactly the boxes an uninterrupted one draws (nothing to save in the resume state), and the
boxes of the next batch can be drawn ahead of its step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch

ATTEMPTS = 10
STREAM = 0x52524331   # "RRC1": keeps these draws apart from any other stream seeded by (seed, step)


def sample_boxes(rng: np.random.Generator, n: int, height: int, width: int,
                 scale: tuple[float, float], ratio: tuple[float, float]) -> np.ndarray:
    """``n`` crop boxes (top, left, h, w) as an int64 array (n, 4), drawn as the module docstring says.

    ``scale`` = (s_min, s_max) with 0 < s_min ≤ s_max ≤ 1 (fractions of the image area), ``ratio`` =
    (r_min, r_max) with 0 < r_min ≤ r_max (width / height). ValueError otherwise.
    """
    if not (0 < scale[0] <= scale[1] <= 1):
        raise ValueError(f"scale must be (s_min, s_max) with 0 < s_min <= s_max <= 1, got {scale!r}")
    if not (0 < ratio[0] <= ratio[1]):
        raise ValueError(f"ratio must be (r_min, r_max) with 0 < r_min <= r_max, got {ratio!r}")
    area = height * width
    target = area * rng.uniform(scale[0], scale[1], size=(n, ATTEMPTS))
    aspect = np.exp(rng.uniform(math.log(ratio[0]), math.log(ratio[1]), size=(n, ATTEMPTS)))
    w = np.rint(np.sqrt(target * aspect)).astype(np.int64)
    h = np.rint(np.sqrt(target / aspect)).astype(np.int64)
    fits = (w > 0) & (w <= width) & (h > 0) & (h <= height)
    first = fits.argmax(axis=1)
    rows = np.arange(n)
    h, w = h[rows, first], w[rows, first]
    fallback = ~fits.any(axis=1)
    h[fallback], w[fallback] = _centre_box(height, width, ratio)
    top = rng.integers(0, height - h + 1)
    left = rng.integers(0, width - w + 1)
    top[fallback], left[fallback] = (height - h[fallback]) // 2, (width - w[fallback]) // 2
    return np.stack([top, left, h, w], axis=1)


def _centre_box(height: int, width: int, ratio: tuple[float, float]) -> tuple[int, int]:
    """(h, w) of the fallback box: the whole image clipped to the aspect-ratio range."""
    image_ratio = width / height
    if image_ratio < ratio[0]:
        return int(round(width / ratio[0])), width
    if image_ratio > ratio[1]:
        return height, int(round(height * ratio[1]))
    return height, width


def _taps(start: torch.Tensor, length: torch.Tensor, size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Source indices i₀, i₁ (n, size) into the full image and the weight of i₁ (n, size), float64, for
    resizing the span [start, start + length) to ``size`` samples (half-pixel centres)."""
    position = (torch.arange(size, dtype=torch.float64) + 0.5) * (length[:, None].double() / size) - 0.5
    position = position.clamp(min=0.0)
    low = position.floor().long()
    high = torch.minimum(low + 1, length[:, None] - 1)
    return start[:, None] + low, start[:, None] + high, position - low


def resized_crop(images: torch.Tensor, boxes: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Each image's box (top, left, h, w) cropped and resized bilinearly back to the image size.

    Shapes: ``images`` (N, C, H, W) floating, ``boxes`` (N, 4) integers with 0 ≤ top, top + h ≤ H,
    0 ≤ left, left + w ≤ W, h, w ≥ 1; returns (N, C, H, W) in the dtype and on the device of ``images``.
    Interpolation weights are formed in float64 and cast to the images' dtype.
    """
    n, channels, height, width = images.shape
    boxes = torch.as_tensor(np.asarray(boxes) if isinstance(boxes, np.ndarray) else boxes).long().cpu()
    if boxes.shape != (n, 4):
        raise ValueError(f"boxes must have shape ({n}, 4), got {tuple(boxes.shape)}")
    top, left, h, w = boxes.unbind(1)
    if (h < 1).any() or (w < 1).any() or (top < 0).any() or (left < 0).any() \
            or (top + h > height).any() or (left + w > width).any():
        raise ValueError(f"a crop box lies outside the {height}x{width} image")
    r0, r1, wy = _taps(top, h, height)
    c0, c1, wx = _taps(left, w, width)
    device, dtype = images.device, images.dtype
    flat = images.reshape(n, channels, height * width)

    def tap(rows: torch.Tensor, cols: torch.Tensor) -> torch.Tensor:
        index = (rows[:, :, None] * width + cols[:, None, :]).reshape(n, 1, -1).to(device)
        return flat.gather(2, index.expand(n, channels, -1)).reshape(n, channels, height, width)

    wy, wx = wy.to(device=device, dtype=dtype)[:, None, :, None], wx.to(device=device, dtype=dtype)[:, None, None, :]
    upper = (1 - wx) * tap(r0, c0) + wx * tap(r0, c1)
    lower = (1 - wx) * tap(r1, c0) + wx * tap(r1, c1)
    return (1 - wy) * upper + wy * lower


@dataclass(frozen=True)
class RandomResizedCrop:
    """The seeded augmentation of standardised, flattened images (see the module docstring).

    ``image_shape`` (C, H, W) with C·H·W = D; ``mean``, ``scale`` (D,) the standardisation
    x_std = (x − mean)/scale; ``area`` = (s_min, s_max), ``ratio`` = (r_min, r_max)."""

    image_shape: tuple[int, int, int]
    mean: torch.Tensor
    scale: torch.Tensor
    area: tuple[float, float] = (0.08, 1.0)
    ratio: tuple[float, float] = (3 / 4, 4 / 3)

    def boxes(self, n: int, seed: int, step: int) -> np.ndarray:
        """The (n, 4) boxes (top, left, h, w) of the n images of update ``step`` of the run with ``seed``."""
        rng = np.random.default_rng([seed, step, STREAM])
        return sample_boxes(rng, n, self.image_shape[1], self.image_shape[2], self.area, self.ratio)

    def __call__(self, x: torch.Tensor, seed: int, step: int) -> torch.Tensor:
        """Augmented copy of ``x`` (N, D) standardised features: unstandardise, crop and resize each image
        with the boxes of (``seed``, ``step``), standardise again. Same shape, dtype and device."""
        pixels = (x * self.scale + self.mean).reshape(len(x), *self.image_shape)
        cropped = resized_crop(pixels, self.boxes(len(x), seed, step)).reshape(len(x), -1)
        return (cropped - self.mean) / self.scale

    def to(self, device: torch.device | str, dtype: torch.dtype | None = None) -> RandomResizedCrop:
        """A copy whose standardisation tensors live on ``device`` (and have ``dtype``)."""
        return replace(self, mean=self.mean.to(device=device, dtype=dtype), scale=self.scale.to(device=device, dtype=dtype))
