"""Views for pretraining, on the worker's device, from prepared uint16 images.

The recipe per paradigm is :data:`radscale.recipes.AUGMENT`; ``docs/pretraining.md`` says why.

- ``dino``: DINOv2's multi-crop (``dinov2/data/augmentations.py``): 2 global crops (scale 0.32-1)
  at the encoder's image size and 8 local crops (scale 0.05-0.32) at 96/224 of it; brightness and
  contrast jitter (0.4, applied with p 0.8); Gaussian blur (sigma 0.1-2) with p 1.0 on the first
  global crop, 0.1 on the second and 0.5 on the locals; solarisation (p 0.2) on the second global
  crop. Not kept: saturation/hue jitter and random grayscale (no-ops on a grey image copied to
  three channels) and horizontal flips (laterality is anatomy and tube position, not noise).
- ``clip``/``unicl``: open_clip's training view, one random-resized crop at scale 0.9-1 and no
  colour jitter: the report describes the whole image, so a view must keep what it names.

Standardisation is the encoder's: the mean/std that travel with its init weights
(``Encoder.preprocess``); :data:`DEFAULT` (radscale's 0.5/0.25) only for a random init.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torchvision.transforms import v2

from radscale.recipes import AUGMENT

MEAN, STD = 0.5, 0.25  # radiographs normalised per image to [0, 1] at prepare time
DINO, CONTRASTIVE = AUGMENT["dino"], AUGMENT["contrastive"]
BLUR_KERNEL = 9  # dinov2's GaussianBlur: kernel 9, sigma uniform in [0.1, 2]
BLUR_SIGMA = (0.1, 2.0)


@dataclasses.dataclass(frozen=True)
class Normalize:
    """``(x - mean) / std`` per channel of (B, 3, H, W) images in [0, 1]."""

    mean: tuple[float, ...] = (MEAN,) * 3
    std: tuple[float, ...] = (STD,) * 3

    @classmethod
    def of(cls, preprocess: object) -> Normalize:
        """From an encoder's ``preprocess`` (anything with mean and std)."""
        return cls(tuple(preprocess.mean), tuple(preprocess.std))  # type: ignore[attr-defined]

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        mean = torch.tensor(self.mean, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
        return (x - mean) / std


DEFAULT = Normalize()


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu", norm: Normalize = DEFAULT) -> torch.Tensor:
    """(B, S, S) uint16 -> (B, 3, S, S) float, standardised with ``norm``."""
    return norm(unit(images, device))


def _multiple(n: float, patch: int) -> int:
    return max(patch, round(n / patch) * patch)


def _photometric(jitter: float, jitter_p: float, blur_p: float, solarize_p: float = 0.0) -> list:
    tf: list = []
    if jitter > 0 and jitter_p > 0:
        tf.append(v2.RandomApply([v2.ColorJitter(brightness=jitter, contrast=jitter)], p=jitter_p))
    if blur_p > 0:
        tf.append(v2.RandomApply([v2.GaussianBlur(BLUR_KERNEL, sigma=BLUR_SIGMA)], p=blur_p))
    if solarize_p > 0:
        tf.append(v2.RandomSolarize(threshold=0.5, p=solarize_p))
    return tf


@dataclasses.dataclass
class MultiCrop:
    image_size: int
    patch: int
    local_crops: int = DINO["local_crops"]
    global_scale: tuple[float, float] = DINO["global_scale"]
    local_scale: tuple[float, float] = DINO["local_scale"]
    jitter: float = DINO["jitter"]
    jitter_p: float = DINO["jitter_p"]
    blur_p: tuple[float, float, float] = DINO["blur_p"]
    solarize_p: float = DINO["solarize_p"]
    norm: Normalize = DEFAULT

    def __post_init__(self) -> None:
        size = _multiple(self.image_size, self.patch)
        crop = v2.RandomResizedCrop(size, scale=self.global_scale, antialias=True)
        self.global_tf = [
            v2.Compose([crop, *_photometric(self.jitter, self.jitter_p, self.blur_p[0])]),
            v2.Compose([crop, *_photometric(self.jitter, self.jitter_p, self.blur_p[1], self.solarize_p)]),
        ]
        local = _multiple(self.image_size * 96 / 224, self.patch)
        self.local_tf = v2.Compose([v2.RandomResizedCrop(local, scale=self.local_scale, antialias=True),
                                    *_photometric(self.jitter, self.jitter_p, self.blur_p[2])])

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, S, S) in [0, 1] -> [global_1, global_2, local_1..local_n], each (B, 3, h, w), standardised."""
        views = [torch.stack([tf(img) for img in x]) for tf in self.global_tf]
        views += [torch.stack([self.local_tf(img) for img in x]) for _ in range(self.local_crops)]
        return [self.norm(v) for v in views]


@dataclasses.dataclass
class SingleView:
    image_size: int
    patch: int
    scale: tuple[float, float] = CONTRASTIVE["scale"]
    jitter: float = CONTRASTIVE["jitter"]
    norm: Normalize = DEFAULT

    def __post_init__(self) -> None:
        tf: list = [v2.RandomResizedCrop(_multiple(self.image_size, self.patch), scale=self.scale, antialias=True)]
        if self.jitter > 0:
            tf.append(v2.ColorJitter(brightness=self.jitter, contrast=self.jitter))
        self.tf = v2.Compose(tf)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.stack([self.tf(img) for img in x]))


def unit(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, S, S) uint16 -> (B, 3, S, S) float in [0, 1] (what the crops take)."""
    x = torch.from_numpy(images.astype(np.float32) / 65535.0).to(device)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
