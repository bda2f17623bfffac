"""Views for pretraining, on the worker's device, from prepared uint16 images.

DINOv2 multi-crop: 2 global crops (scale 0.32-1) at the encoder's image size and 8 local crops
(scale 0.05-0.32) at 96/224 of it, with brightness/contrast jitter; no colour (radiographs are
grey) and no flips (laterality matters). CLIP/UniCL: one global view per image.

Standardisation is the encoder's: the mean/std that travel with its init weights
(``Encoder.preprocess``); :data:`DEFAULT` (radscale's 0.5/0.25) only for a random init.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torchvision.transforms import v2

MEAN, STD = 0.5, 0.25  # radiographs normalised per image to [0, 1] at prepare time


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


@dataclasses.dataclass
class MultiCrop:
    image_size: int
    patch: int
    local_crops: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)
    norm: Normalize = DEFAULT

    def __post_init__(self) -> None:
        jitter = v2.ColorJitter(brightness=0.4, contrast=0.4)
        self.global_tf = v2.Compose([v2.RandomResizedCrop(_multiple(self.image_size, self.patch),
                                                          scale=self.global_scale, antialias=True), jitter])
        local = _multiple(self.image_size * 96 / 224, self.patch)
        self.local_tf = v2.Compose([v2.RandomResizedCrop(local, scale=self.local_scale, antialias=True), jitter])

    def __call__(self, x: torch.Tensor) -> list[torch.Tensor]:
        """x (B, 3, S, S) in [0, 1] -> [global_1, global_2, local_1..local_n], each (B, 3, h, w), standardised."""
        views = [torch.stack([self.global_tf(img) for img in x]) for _ in range(2)]
        views += [torch.stack([self.local_tf(img) for img in x]) for _ in range(self.local_crops)]
        return [self.norm(v) for v in views]


@dataclasses.dataclass
class SingleView:
    image_size: int
    patch: int
    scale: tuple[float, float] = (0.5, 1.0)
    norm: Normalize = DEFAULT

    def __post_init__(self) -> None:
        self.tf = v2.Compose([v2.RandomResizedCrop(_multiple(self.image_size, self.patch), scale=self.scale,
                                                   antialias=True), v2.ColorJitter(brightness=0.2, contrast=0.2)])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(torch.stack([self.tf(img) for img in x]))


def unit(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, S, S) uint16 -> (B, 3, S, S) float in [0, 1] (what the crops take)."""
    x = torch.from_numpy(images.astype(np.float32) / 65535.0).to(device)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
