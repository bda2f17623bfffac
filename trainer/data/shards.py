"""Prepare once, reuse everywhere: decode every image with Ray Data into Parquet shards plus an index.

Layout under the prepared URI (``<output>/prep/<fingerprint>/``)::

    index.json          fingerprint, parameters, counts, skips by reason, split sizes, shard files
    pool/*.parquet      the pretraining pool in its nested order: size N is the first N rows
    eval/*.parquet      probe train/val/test rows (column ``split``)

Rows carry the image (uint16, prep size square, row-major bytes), the labels, the report, a hashed
patient id, the view and any masks (uint8). Writing the pool in nested order makes a subset a
prefix of the shard files, so a 30k cell reads 30k images, not the whole pool.

The fingerprint covers the manifest's content, the prep parameters and the code version; a prepare
whose fingerprint already has an index does no decoding at all.
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import hashlib
import io
import json
import logging
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from radscale import __version__
from radscale.trainer import storage
from radscale.trainer.data import dicom, split
from radscale.trainer.data.ids import hash_id
from radscale.trainer.data.manifest import Manifest

log = logging.getLogger(__name__)

PREP_FORMAT = 2  # 2: large_binary pixel columns, 2x box pre-reduction before the bicubic
SHARD_ROWS = 256
INDEX = "index.json"


@dataclasses.dataclass(frozen=True)
class PrepParams:
    prep_size: int
    eval_fraction: float
    seed: int


def fingerprint(manifest_hash: str, params: PrepParams) -> str:
    key = json.dumps({"manifest": manifest_hash, "params": dataclasses.asdict(params), "format": PREP_FORMAT,
                      "code": __version__}, sort_keys=True)
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def _load_mask(uri: str, size: int, endpoint: str | None, out: np.ndarray) -> None:
    """A mask file cropped and resized exactly like its image (:func:`dicom.resize_square`), as 0/1."""
    from PIL import Image

    fs, path = storage.filesystem(uri, endpoint)
    with fs.open(path, "rb") as fh:
        mask = Image.open(io.BytesIO(fh.read()))
    if mask.mode != "L":
        mask = mask.convert("L")
    mask = mask.resize((size, size), Image.Resampling.NEAREST, box=dicom.center_box(*mask.size))
    np.greater(np.asarray(mask).reshape(-1), 127, out=out)


def _binary_rows(rows: np.ndarray, present: np.ndarray) -> pa.Array:
    """One binary value per row: the row's bytes where ``present``, else empty. The data buffer is
    ``rows`` itself when every row is present (no per-row bytes objects, no copy)."""
    width = rows.shape[1] * rows.itemsize
    offsets = np.zeros(len(rows) + 1, dtype=np.int64)
    np.cumsum(present * width, out=offsets[1:])
    data = rows if present.all() else rows[present]
    return pa.LargeBinaryArray.from_buffers(pa.large_binary(), len(rows),
                                           [None, pa.py_buffer(offsets), pa.py_buffer(np.ascontiguousarray(data))])


def decode_batch(batch: pa.Table, *, root: str, prep_size: int, endpoint: str | None,
                 masks: tuple[str, ...]) -> pa.Table:
    """Ray Data UDF: decode each row's DICOM (and masks); failures become a skip reason, not an error.

    Images and masks are written into one (rows, size * size) array each, which becomes the
    column's data buffer as it is."""
    n, side = batch.num_rows, prep_size * prep_size
    pixels, ok, skips = np.zeros((n, side), np.uint16), np.zeros(n, bool), [""] * n
    mask_px = {m: np.zeros((n, side), np.uint8) for m in masks}
    mask_ok = {m: np.zeros(n, bool) for m in masks}
    mask_paths = {m: batch.column(m).to_pylist() if m in batch.column_names else [None] * n for m in masks}
    opts = storage.storage_options(root, endpoint)
    base = root.rstrip("/")
    for i, image in enumerate(batch.column("image").to_pylist()):
        try:
            dec = dicom.load(f"{base}/{image}", None, opts)
            pixels[i] = dicom.to_uint16(dicom.resize_square(dec.image, prep_size)).reshape(-1)
            ok[i] = True
        except dicom.DicomSkip as skip:
            skips[i] = str(skip.reason)
            continue
        for m in masks:
            value = mask_paths[m][i]
            if isinstance(value, str) and value:
                _load_mask(f"{base}/{value}", prep_size, endpoint, mask_px[m][i])
                mask_ok[m][i] = True
    out = batch.drop_columns(["image", *[m for m in masks if m in batch.column_names]])
    out = out.append_column("pixels", _binary_rows(pixels, ok)).append_column("skip", pa.array(skips, pa.string()))
    for m in masks:
        out = out.append_column(m, _binary_rows(mask_px[m], mask_ok[m]))
    return out


@dataclasses.dataclass
class PrepareReport:
    fingerprint: str
    reused: bool
    images: int
    decoded: int
    skipped: dict[str, int]
    pool: int
    eval_images: dict[str, int]
    bytes_written: int
    seconds: float = 0.0


def _pa_filesystem(fs: Any) -> Any:
    import pyarrow.fs as pafs

    return pafs.PyFileSystem(pafs.FSSpecHandler(fs))


def read_index(prepared_uri: str, endpoint: str | None = None) -> dict[str, Any] | None:
    uri = f"{prepared_uri.rstrip('/')}/{INDEX}"
    if not storage.exists(uri, endpoint):
        return None
    return json.loads(storage.read_text(uri, endpoint))


def prepare(manifest: Manifest, dataset_uri: str, prepared_uri: str, params: PrepParams, *,
            endpoint: str | None = None) -> PrepareReport:
    """Decode every image once into shards under ``prepared_uri`` (Ray must be initialised)."""
    import time

    import ray

    start = time.perf_counter()
    fp = fingerprint(manifest.content_hash, params)
    index = read_index(prepared_uri, endpoint)
    if index is not None and index.get("fingerprint") == fp:
        log.info("prepare: shards for fingerprint %s exist; reusing them", fp)
        return PrepareReport(fp, True, index["images"], 0, index["skipped"], index["pool"], index["eval"],
                             index["bytesWritten"], time.perf_counter() - start)

    frame = manifest.frame
    sp = split.split_by_patient(frame["patient"].tolist(), frame["image"].tolist(), params.eval_fraction, params.seed)
    cols = manifest.columns
    rows = pd.DataFrame({
        "row_id": np.arange(len(frame), dtype=np.int64),
        "image": frame["image"].astype(str),
        "patient": [hash_id(p) for p in frame["patient"]],  # no patient id leaves this function
        "study": [hash_id(s) for s in frame["study"].fillna("")],
        "view": frame["view"].fillna("").astype(str),
    })
    if "report" in frame:
        rows["report"] = frame["report"].fillna("").astype(str)
    for lab in cols.labels:
        rows[lab] = frame[lab].astype("float32")
    for m in cols.masks:
        rows[m] = frame[m].fillna("").astype(str)

    fs, root = storage.filesystem(prepared_uri, endpoint)
    if fs.exists(root):
        fs.rm(root, recursive=True)  # a stale preparation of another fingerprint
    ctx = ray.data.DataContext.get_current()
    ctx.execution_options.preserve_order = True  # the pool is written in nested order
    # One fused decode->write operator: the reservation Ray Data keeps for other operators left one
    # of a 2-CPU node's cores idle (266 -> 399 img/s on 600 phantom images, bench/prep.py).
    ctx.op_resource_reservation_enabled = False
    cpus = max(1, int(ray.cluster_resources().get("CPU", 1)))
    parts = {"pool": rows.iloc[sp.pool]}
    evals = {"train": sp.eval_train, "val": sp.eval_val, "test": sp.eval_test}
    parts["eval"] = pd.concat([rows.iloc[idx].assign(split=name) for name, idx in evals.items()])
    udf = dict(root=dataset_uri, prep_size=params.prep_size, endpoint=endpoint, masks=tuple(cols.masks))
    total = sum(len(part) for part in parts.values())

    def write(name: str, part: pd.DataFrame) -> None:
        part = part.reset_index(drop=True)
        # A block is one task and one shard file: >= 16 per CPU across both parts so that no core
        # idles long at the end (a block of 2k radiographs takes seconds), at most SHARD_ROWS rows.
        # (Asking the writer for a minimum of rows per file made Ray Data merge blocks before
        # decoding: 3 tasks for 600 images.)
        step = max(8, min(SHARD_ROWS, -(-total // (16 * cpus))))
        table = pa.Table.from_pandas(part, preserve_index=False)
        ds = ray.data.from_arrow([table.slice(i, step) for i in range(0, len(part), step)])
        ds = ds.map_batches(decode_batch, batch_format="pyarrow", batch_size=None, fn_kwargs=udf)
        ds.write_parquet(f"{root}/{name}", filesystem=_pa_filesystem(fs))

    # Both parts run at once, so the small eval part fills the pool's tail instead of starting after it.
    with concurrent.futures.ThreadPoolExecutor(len(parts)) as pool:
        for future in [pool.submit(write, name, part) for name, part in parts.items() if not part.empty]:
            future.result()
    index = _build_index(fs, root, fp, params, len(frame), pool_order=np.asarray(sp.pool, dtype=np.int64))
    storage.write_bytes(f"{prepared_uri.rstrip('/')}/{INDEX}", json.dumps(index, indent=1).encode(), endpoint)
    return PrepareReport(fp, False, len(frame), index["decoded"], index["skipped"], index["pool"], index["eval"],
                         index["bytesWritten"], time.perf_counter() - start)


def _build_index(fs: Any, root: str, fp: str, params: PrepParams, images: int,
                 pool_order: np.ndarray) -> dict[str, Any]:
    """Read back the written files' row ids and skips (column projection: no pixels) into the index.

    Pool files are listed in nested order (by the pool position of their first row), and each
    records its first position, so a size-N subset is read from the prefix of files it needs.
    """
    position = np.empty(int(pool_order.max()) + 1 if len(pool_order) else 0, dtype=np.int64)
    position[pool_order] = np.arange(len(pool_order))
    import pyarrow.parquet as pq

    files: dict[str, list[dict[str, Any]]] = {}
    skipped: dict[str, int] = {}
    eval_counts: dict[str, int] = {}
    bytes_written, decoded, pool = 0, 0, 0
    for name in ("pool", "eval"):
        entries = []
        paths = sorted(fs.glob(f"{root}/{name}/*.parquet")) if fs.exists(f"{root}/{name}") else []
        for path in paths:
            with fs.open(path, "rb") as fh:
                table = pq.read_table(fh, columns=["row_id", "skip", *(["split"] if name == "eval" else [])])
            bytes_written += fs.size(path)
            row_ids = table.column("row_id").to_numpy()
            skips = table.column("skip").to_pylist()
            ok = np.array([s == "" for s in skips])
            for s in skips:
                if s:
                    skipped[s] = skipped.get(s, 0) + 1
            decoded += int(ok.sum())
            if name == "pool":
                pool += int(ok.sum())
            else:
                for s, good in zip(table.column("split").to_pylist(), ok, strict=True):
                    if good:
                        eval_counts[s] = eval_counts.get(s, 0) + 1
            entry = {"path": path.rsplit("/", 1)[-1], "rows": len(row_ids), "valid": int(ok.sum())}
            if name == "pool":
                pos = position[row_ids]
                entry["start"], entry["end"] = int(pos.min()), int(pos.max()) + 1
                entry["contiguous"] = bool(np.all(np.diff(pos) == 1))
            entries.append(entry)
        if name == "pool":
            entries.sort(key=lambda e: e["start"])
        files[name] = entries
    return {"fingerprint": fp, "format": PREP_FORMAT, "params": dataclasses.asdict(params), "images": images,
            "decoded": decoded, "skipped": skipped, "pool": pool, "eval": eval_counts, "bytesWritten": bytes_written,
            "imageShape": [params.prep_size, params.prep_size], "dtype": "uint16", "files": files}
