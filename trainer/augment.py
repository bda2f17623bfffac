"""Views for pretraining, on the worker's device, from prepared uint16 images.

DINOv2 multi-crop: 2 global crops (scale 0.32-1) at the encoder's image size and 8 local crops
(scale 0.05-0.32) at 96/224 of it, with brightness/contrast jitter; no colour (radiographs are
grey) and no flips (laterality matters). CLIP/UniCL: one global view per image.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
from torchvision.transforms import v2

MEAN, STD = 0.5, 0.25  # radiographs normalised per image to [0, 1] at prepare time


def to_tensor(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, S, S) uint16 -> (B, 3, S, S) float, standardised."""
    x = torch.from_numpy(images.astype(np.float32) / 65535.0).to(device)
    return ((x - MEAN) / STD).unsqueeze(1).expand(-1, 3, -1, -1).contiguous()


def _multiple(n: float, patch: int) -> int:
    return max(patch, round(n / patch) * patch)


@dataclasses.dataclass
class MultiCrop:
    image_size: int
    patch: int
    local_crops: int = 8
    global_scale: tuple[float, float] = (0.32, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.32)

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
        return [(v - MEAN) / STD for v in views]


@dataclasses.dataclass
class SingleView:
    image_size: int
    patch: int
    scale: tuple[float, float] = (0.5, 1.0)

    def __post_init__(self) -> None:
        self.tf = v2.Compose([v2.RandomResizedCrop(_multiple(self.image_size, self.patch), scale=self.scale,
                                                   antialias=True), v2.ColorJitter(brightness=0.2, contrast=0.2)])

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (torch.stack([self.tf(img) for img in x]) - MEAN) / STD


def unit(images: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
    """(B, S, S) uint16 -> (B, 3, S, S) float in [0, 1] (what the crops take)."""
    x = torch.from_numpy(images.astype(np.float32) / 65535.0).to(device)
    return x.unsqueeze(1).expand(-1, 3, -1, -1).contiguous()
