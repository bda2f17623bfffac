"""Read DICOM radiographs through fsspec and turn them into images a model can use.

Decoding is pydicom's, with the pylibjpeg plugins for JPEG 2000, JPEG(-LS) lossless and RLE.
From stored values to a display image in [0, 1], air dark:

1. modality LUT (or RescaleSlope/RescaleIntercept);
2. the first VOI LUT or window when the file has one, else a robust full-range normalisation
   (0.5th-99.5th percentile), since many CR/DX files carry neither;
3. MONOCHROME1 inverted, so that air is always dark.

Then the shorter side is resized to the prep size with an antialiased bicubic filter (a plain
B-spline would alias when shrinking 2,000 px radiographs fourfold). Files that cannot become an
image raise :class:`DicomSkip` with a reason the prepare report counts. Nothing here logs a
patient id, a name, or a path (paths embed ids); callers log :func:`ids.hash_id` values.

I/O: :func:`read_bytes` only; the rest is pure.
"""

from __future__ import annotations

import dataclasses
import enum
import io
import logging
import time
import warnings
from typing import Any

import fsspec
import numpy as np
import pydicom
from PIL import Image
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_modality_lut, apply_voi_lut

log = logging.getLogger(__name__)


class SkipReason(enum.StrEnum):
    UNREADABLE = "unreadable"  # storage kept failing
    NOT_DICOM = "not-dicom"
    NO_PIXELS = "no-pixel-data"
    MULTI_FRAME = "multi-frame"
    NOT_GRAYSCALE = "not-grayscale"
    DECODE_ERROR = "decode-error"  # truncated, corrupt, or no decoder for the transfer syntax
    BLANK = "blank-image"


class DicomSkip(Exception):
    def __init__(self, reason: SkipReason, detail: str = ""):
        self.reason, self.detail = reason, detail
        super().__init__(f"{reason}: {detail}" if detail else str(reason))


TRANSIENT = (ConnectionError, TimeoutError, BrokenPipeError)


def read_bytes(uri: str, storage_options: dict[str, Any] | None = None, *, retries: int = 4,
               backoff_s: float = 0.25) -> bytes:
    """Whole file through fsspec; transient storage errors are retried with exponential backoff."""
    for attempt in range(retries + 1):
        try:
            with fsspec.open(uri, "rb", **(storage_options or {})) as fh:
                return fh.read()
        except FileNotFoundError as exc:
            raise DicomSkip(SkipReason.UNREADABLE, "file not found") from exc
        except TRANSIENT as exc:
            if attempt == retries:
                raise DicomSkip(SkipReason.UNREADABLE, f"{type(exc).__name__} after {retries} retries") from exc
            time.sleep(backoff_s * 2**attempt)
        except OSError as exc:  # s3fs maps throttling/5xx to OSError subclasses
            if attempt == retries:
                raise DicomSkip(SkipReason.UNREADABLE, f"{type(exc).__name__} after {retries} retries") from exc
            time.sleep(backoff_s * 2**attempt)
    raise AssertionError("unreachable")


@dataclasses.dataclass(frozen=True)
class Decoded:
    image: np.ndarray  # float32, (H, W), [0, 1], air dark
    photometric: str
    bits_stored: int
    transfer_syntax: str
    windowed: bool  # a VOI LUT or window from the file was used


def parse(blob: bytes) -> pydicom.Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(blob), force=False)
    except InvalidDicomError as exc:
        raise DicomSkip(SkipReason.NOT_DICOM, "no DICOM preamble/prefix") from exc
    except Exception as exc:
        raise DicomSkip(SkipReason.DECODE_ERROR, f"header: {type(exc).__name__}") from exc
    if "PixelData" not in ds:
        raise DicomSkip(SkipReason.NO_PIXELS, str(ds.get("Modality", "unknown modality")))
    return ds


def to_display(ds: pydicom.Dataset) -> Decoded:
    """Stored pixels -> float32 display image in [0, 1] with air dark."""
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise DicomSkip(SkipReason.MULTI_FRAME, f"{frames} frames; a radiograph has one")
    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise DicomSkip(SkipReason.NOT_GRAYSCALE, photometric or "no PhotometricInterpretation")
    try:
        raw = ds.pixel_array
    except Exception as exc:
        raise DicomSkip(SkipReason.DECODE_ERROR, f"pixels: {type(exc).__name__}: {str(exc)[:120]}") from exc
    arr = apply_modality_lut(raw, ds)
    windowed = "VOILUTSequence" in ds or "WindowCenter" in ds
    if windowed:
        try:
            with warnings.catch_warnings():  # float input after a rescale: the LUT indexes are rounded
                warnings.simplefilter("ignore", UserWarning)
                arr = apply_voi_lut(arr, ds, index=0)
        except Exception:  # a malformed window or LUT: fall back to the full range
            windowed = False
    arr = np.asarray(arr, dtype=np.float64)
    lo, hi = (float(arr.min()), float(arr.max())) if windowed else np.percentile(arr, [0.5, 99.5])
    if not np.isfinite(hi - lo) or hi - lo <= 0:
        raise DicomSkip(SkipReason.BLANK, "no contrast")
    img = np.clip((arr - lo) / (hi - lo), 0.0, 1.0)
    if photometric == "MONOCHROME1":
        img = 1.0 - img
    return Decoded(
        image=img.astype(np.float32),
        photometric=photometric,
        bits_stored=int(ds.get("BitsStored", 0) or 0),
        transfer_syntax=str(ds.file_meta.get("TransferSyntaxUID", "")),
        windowed=windowed,
    )


def resize_shorter(img: np.ndarray, size: int) -> np.ndarray:
    """Shorter side to ``size`` pixels, aspect kept, antialiased bicubic; float32 in, float32 out."""
    h, w = img.shape
    scale = size / min(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    out = Image.fromarray(img, mode="F").resize(new, Image.Resampling.BICUBIC)
    return np.clip(np.asarray(out, dtype=np.float32), 0.0, 1.0)


def to_uint16(img: np.ndarray) -> np.ndarray:
    return np.round(img * 65535.0).astype(np.uint16)


def decode(blob: bytes, prep_size: int | None = None) -> Decoded:
    """Bytes of one DICOM file -> display image (resized when ``prep_size`` is given)."""
    dec = to_display(parse(blob))
    if prep_size is not None:
        dec = dataclasses.replace(dec, image=resize_shorter(dec.image, prep_size))
    return dec


def load(uri: str, prep_size: int | None = None, storage_options: dict[str, Any] | None = None) -> Decoded:
    return decode(read_bytes(uri, storage_options), prep_size)
