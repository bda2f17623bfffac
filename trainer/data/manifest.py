"""Read and check a study manifest (CSV, Parquet or JSONL) against the study's column names.

Every problem names the column or the row (1-based, as a spreadsheet shows it) and what to do:
missing columns, label values other than 1/0/-1/blank, duplicate images, empty patient ids.
Whether the images exist is checked lazily (:func:`missing_images`), as a count, since listing
millions of objects up front is slow. Patient ids never appear in messages; rows do.

I/O: :func:`read_manifest` and :func:`missing_images`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
from collections.abc import Sequence
from typing import Any

import fsspec
import numpy as np
import pandas as pd

from radscale.spec import ColumnsSpec

LABEL_VALUES = (1, 0, -1)
FORMATS = {".csv": "csv", ".parquet": "parquet", ".pq": "parquet", ".jsonl": "jsonl", ".ndjson": "jsonl"}


class ManifestError(ValueError):
    def __init__(self, uri: str, problems: Sequence[str]):
        self.problems = list(problems)
        super().__init__(f"manifest {uri}:\n" + "\n".join(f"  {p}" for p in self.problems))


# The manifest's column names are the study's own ``spec.dataset.columns``: one shape for both planes.
Columns = ColumnsSpec


@dataclasses.dataclass(frozen=True)
class Manifest:
    frame: pd.DataFrame  # canonical columns: image, patient, study, view[, report], labels..., masks...
    columns: Columns
    content_hash: str  # sha256 of the manifest bytes: part of the dataset fingerprint

    def __len__(self) -> int:
        return len(self.frame)

    def labels(self) -> np.ndarray:
        """(N, L) float32: 1, 0, -1 (uncertain), NaN (blank)."""
        return self.frame[list(self.columns.labels)].to_numpy(dtype=np.float32)


def _format(uri: str) -> str:
    for ext, fmt in FORMATS.items():
        if uri.lower().endswith(ext):
            return fmt
    raise ManifestError(uri, [f"unknown manifest format; name it .csv, .parquet or .jsonl (one of {sorted(FORMATS)})"])


def _rows(mask: pd.Series, limit: int = 5) -> str:
    rows = [str(i + 2) for i in np.flatnonzero(mask.to_numpy())[:limit]]  # +1 header, +1 one-based
    more = int(mask.sum()) - len(rows)
    return ", ".join(rows) + (f" and {more} more" if more > 0 else "")


def parse_manifest(blob: bytes, uri: str, columns: Columns) -> Manifest:
    fmt = _format(uri)
    try:
        if fmt == "csv":
            df = pd.read_csv(io.BytesIO(blob), dtype=str, keep_default_na=False, na_values=[""])
        elif fmt == "parquet":
            df = pd.read_parquet(io.BytesIO(blob))
        else:
            df = pd.read_json(io.BytesIO(blob), lines=True, dtype=False)
    except Exception as exc:
        raise ManifestError(uri, [f"cannot parse as {fmt}: {type(exc).__name__}: {str(exc)[:200]}"]) from exc

    wanted = {"image": columns.image, "patient": columns.patient, "study": columns.study, "view": columns.view}
    if columns.report:
        wanted["report"] = columns.report
    needed = [*wanted.values(), *columns.labels, *columns.masks]
    missing = [c for c in needed if c not in df.columns]
    if missing:
        raise ManifestError(uri, [f"column {c!r} is missing (spec.dataset.columns names it); "
                                  f"the manifest has {sorted(map(str, df.columns))}" for c in missing])
    problems: list[str] = []
    out = pd.DataFrame({k: df[v].astype("string") for k, v in wanted.items()})
    for col in ("image", "patient"):
        blank = out[col].isna() | (out[col].str.strip() == "")
        if blank.any():
            problems.append(f"column {wanted[col]!r}: empty in rows {_rows(blank)}")
    dup = out["image"].duplicated(keep="first") & out["image"].notna()
    if dup.any():
        problems.append(f"column {columns.image!r}: duplicate images in rows {_rows(dup)}; list each image once")
    for col in columns.labels:
        raw = df[col]
        values = pd.to_numeric(raw, errors="coerce")
        bad_text = values.isna() & raw.notna() & (raw.astype("string").str.strip() != "")
        bad_value = values.notna() & ~values.isin(LABEL_VALUES)
        if bad_text.any() or bad_value.any():
            problems.append(f"label column {col!r}: values must be 1, 0, -1 (uncertain) or blank; "
                            f"rows {_rows(bad_text | bad_value)} are not")
        out[col] = values.astype("float32")
    for col in columns.masks:
        out[col] = df[col].astype("string")
    if problems:
        raise ManifestError(uri, problems)
    return Manifest(out.reset_index(drop=True), columns, hashlib.sha256(blob).hexdigest())


def manifest_uri(dataset_uri: str, manifest: str) -> str:
    return manifest if "://" in manifest or manifest.startswith("/") else dataset_uri.rstrip("/") + "/" + manifest


def read_manifest(dataset_uri: str, manifest: str, columns: Columns,
                  storage_options: dict[str, Any] | None = None) -> Manifest:
    uri = manifest_uri(dataset_uri, manifest)
    try:
        with fsspec.open(uri, "rb", **(storage_options or {})) as fh:
            blob = fh.read()
    except FileNotFoundError as exc:
        raise ManifestError(uri, ["not found; check spec.dataset.uri and spec.dataset.manifest"]) from exc
    except Exception as exc:
        raise ManifestError(uri, [f"cannot read: {type(exc).__name__}: {exc}; check the storage endpoint "
                                  "and credentials"]) from exc
    return parse_manifest(blob, uri, columns)


def missing_images(manifest: Manifest, dataset_uri: str, storage_options: dict[str, Any] | None = None,
                   sample: int | None = None, seed: int = 0) -> tuple[int, int]:
    """(missing, checked): how many listed images do not exist (all, or a seeded sample)."""
    fs, root = fsspec.core.url_to_fs(dataset_uri, **(storage_options or {}))
    paths = manifest.frame["image"].tolist()
    if sample is not None and sample < len(paths):
        idx = np.random.default_rng(seed).choice(len(paths), size=sample, replace=False)
        paths = [paths[i] for i in idx]
    root = root.rstrip("/")
    missing = sum(not fs.exists(f"{root}/{p}") for p in paths)
    return missing, len(paths)
