"""Frozen features of the evaluation splits, extracted once per cell and cached beside its outputs.

The cell's image tower (a pretrained cell's ``encoder.safetensors``, or the encoder's init for a
baseline) runs once over the probe train/val/test rows of the prepared shards; CLS and patch
tokens are kept as float16 in ``<output>/features.safetensors``. Every task and every sweep trial
of the cell reads those: the encoder never runs again. The cache is keyed by the weights, the
encoder spec and the shards' fingerprint, so a re-trained cell or re-prepared dataset recomputes.

Labels, reports, masks, hashed patient ids and row ids come with the features (read from the shards,
not cached: cheap).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.numpy import load as load_safetensors
from safetensors.numpy import save as save_safetensors

from radscale.cells import CellSpec, join_uri, storage_options
from radscale.trainer import augment, storage
from radscale.trainer.data.loader import PreparedDataset

log = logging.getLogger(__name__)
FEATURES_FILE = "features.safetensors"
SPLITS = ("train", "val", "test")
BATCH = 64


@dataclasses.dataclass
class SplitData:
    cls: np.ndarray  # (N, C) float32
    patches: np.ndarray  # (N, h*w, C) float32
    labels: np.ndarray  # (N, L) float32: 1, 0, -1, NaN (dataset.columns.labels order)
    reports: list[str]
    masks: dict[str, np.ndarray]  # name -> (N, S, S) uint8 at the encoder's image size
    patients: list[str] = dataclasses.field(default_factory=list)  # hashed patient id per row
    row_ids: np.ndarray | None = None  # (N,) the shards' row_id

    def patient_ids(self) -> list[str]:
        """Hashed patient id per row; without any (a hand-built split), each row is its own patient."""
        if not self.patients:
            return [f"row-{i}" for i in range(len(self.cls))]
        if len(self.patients) != len(self.cls):
            raise ValueError(f"{len(self.patients)} patient ids for {len(self.cls)} rows")
        return list(self.patients)

    def ids(self) -> np.ndarray:
        return np.arange(len(self.cls)) if self.row_ids is None else np.asarray(self.row_ids)


@dataclasses.dataclass
class EvalData:
    """Everything the evaluation tasks see: frozen features and targets per split."""

    splits: dict[str, SplitData]
    label_names: tuple[str, ...]
    grid: tuple[int, int]  # patch grid (h, w)
    patch: int
    image_size: int

    def labels(self, split: str, names: list[str]) -> np.ndarray:
        idx = [self.label_names.index(n) for n in names]
        return self.splits[split].labels[:, idx]


def cache_key(cell: CellSpec, fingerprint: str) -> str:
    enc = cell.encoder.model_dump(mode="json", exclude={"optimizer"}) if cell.encoder else {}
    blob = json.dumps({"weights": cell.weights, "encoder": enc, "shards": fingerprint}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _backend(attention: str) -> str:
    # On CPU the Triton interpreter (TRITON_INTERPRET=1 in CI) is far too slow for extraction.
    return "sdpa" if attention == "auto" and not torch.cuda.is_available() else attention


@torch.no_grad()
def extract(cell: CellSpec, images: np.ndarray, device: torch.device) -> tuple[np.ndarray, np.ndarray, int]:
    """(cls, patches, patch size) of uint16 images through the cell's frozen image tower."""
    from radscale.trainer.models.encoders import encoder_from_spec

    opts = storage_options(cell.weights, cell.dataset.endpoint)
    enc = encoder_from_spec(cell.encoder, attention_backend=_backend(cell.attention), weights=cell.weights,
                            storage_options=opts, autocast_bf16=device.type == "cuda").to(device).eval()
    size = cell.encoder.image_size
    norm = augment.Normalize.of(enc.preprocess)  # the weights' own: RAD-DINO's 0.5307/0.2583, CLIP's, ...
    cls, patches = [], []
    for i in range(0, len(images), BATCH):
        x = augment.to_tensor(images[i:i + BATCH], device, norm)
        if x.shape[-1] != size:
            x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        f = enc(x)
        cls.append(f.cls.float().cpu().numpy())
        patches.append(f.patches.float().cpu().numpy())
    c = enc.embed_dim
    patch = enc.patch
    if not cls:
        return np.zeros((0, c), np.float32), np.zeros((0, (size // patch) ** 2, c), np.float32), patch
    return np.concatenate(cls), np.concatenate(patches), patch


def _resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    if masks.shape[-1] == size or len(masks) == 0:
        return masks
    t = torch.from_numpy(masks.astype(np.float32))[:, None]
    return (F.interpolate(t, size=(size, size), mode="area")[:, 0] >= 0.5).numpy().astype(np.uint8)


def load(cell: CellSpec, device: torch.device | None = None) -> tuple[EvalData, bool]:
    """(features and targets of the eval splits, whether they came from the cache)."""
    device = device or torch.device("cuda" if torch.cuda.is_available() else "cpu")
    cols = cell.dataset.columns
    data = PreparedDataset(cell.shards, labels=tuple(cols.labels), masks=tuple(cols.masks),
                           endpoint=cell.dataset.endpoint)
    key = cache_key(cell, data.index["fingerprint"])
    uri = join_uri(cell.output, FEATURES_FILE)
    fs, path = storage.filesystem(uri, cell.dataset.endpoint)
    cached: dict[str, np.ndarray] | None = None
    patch = 0
    if fs.exists(path):
        blob = fs.cat_file(path)
        meta = _metadata(blob)
        if meta.get("key") == key:
            cached, patch = load_safetensors(blob), int(meta["patch"])
        else:
            log.info("features cache of %s is stale (weights or data changed); recomputing", cell.cell)
    splits: dict[str, SplitData] = {}
    tensors: dict[str, np.ndarray] = {}
    for name in SPLITS:
        rows = data.eval_split(name)
        if cached is not None:
            cls, patches = cached[f"{name}.cls"].astype(np.float32), cached[f"{name}.patches"].astype(np.float32)
        else:
            cls, patches, patch = extract(cell, rows.images, device)
            tensors[f"{name}.cls"], tensors[f"{name}.patches"] = cls.astype(np.float16), patches.astype(np.float16)
        masks = {m: _resize_masks(v, cell.encoder.image_size) for m, v in rows.masks.items()}
        splits[name] = SplitData(cls, patches, rows.labels, rows.reports, masks, list(rows.patients), rows.row_ids)
    if cached is None:
        storage.write_bytes(uri, save_safetensors(tensors, metadata={"key": key, "patch": str(patch)}),
                            cell.dataset.endpoint)
    side = -(-cell.encoder.image_size // patch)
    return EvalData(splits, tuple(cols.labels), (side, side), patch, cell.encoder.image_size), cached is not None


def _metadata(blob: bytes) -> dict[str, Any]:
    """The ``__metadata__`` of a safetensors blob (its JSON header), without reading the tensors."""
    n = int.from_bytes(blob[:8], "little")
    return json.loads(blob[8:8 + n]).get("__metadata__", {})
