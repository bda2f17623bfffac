"""Stream a prepared subset to training workers: deterministic per rank, seeded shuffle, bounded memory.

A size-N subset is the first N valid rows of the pool's nested order, read from the prefix of
shard files that holds them. Each epoch shuffles the file order and, within a window of a few
files, the rows; rank r of W takes every W-th row of the window, and every rank yields the same
number of rows (the window's tail that does not divide by W is dropped, as DistributedSampler
does). The same (seed, epoch) gives the same batches on every run. I/O: reads shards via fsspec.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from radscale.trainer import storage
from radscale.trainer.data.shards import INDEX


@dataclasses.dataclass
class Batch:
    images: np.ndarray  # (B, S, S) uint16
    labels: np.ndarray  # (B, L) float32: 1, 0, -1, NaN
    reports: list[str]
    row_ids: np.ndarray
    masks: dict[str, np.ndarray]  # name -> (B, S, S) uint8


def _stack(column: pa.ChunkedArray, shape: tuple[int, ...], dtype: type) -> np.ndarray:
    """A binary column of fixed-shape arrays as one (rows, *shape) array; an empty value (a row
    without a mask) becomes zeros. Copied from the column's data buffer, not row by row."""
    out = np.zeros((len(column), *shape), dtype=dtype)
    as_bytes = out.reshape(len(out), int(np.prod(shape))).view(np.uint8)
    width = as_bytes.shape[1]
    row = 0
    for chunk in column.chunks:
        _, offsets, data = chunk.buffers()
        kind = np.int64 if pa.types.is_large_binary(chunk.type) else np.int32
        ends = np.frombuffer(offsets, dtype=kind)[chunk.offset:chunk.offset + len(chunk) + 1] if len(chunk) else []
        lengths = np.diff(ends)
        if np.any((lengths != 0) & (lengths != width)):
            raise ValueError(f"a stored value is not a {shape} {np.dtype(dtype).name} array: shards and index disagree")
        raw = np.frombuffer(data, dtype=np.uint8) if data is not None else np.zeros(0, np.uint8)
        dest = as_bytes[row:row + len(chunk)]
        if len(chunk) and np.all(lengths == width):  # the common case: one contiguous copy
            dest[:] = raw[ends[0]:ends[-1]].reshape(len(chunk), width)
        else:
            for i in np.flatnonzero(lengths):
                dest[i] = raw[ends[i]:ends[i + 1]]
        row += len(chunk)
    return out


class PreparedDataset:
    def __init__(self, prepared_uri: str, labels: tuple[str, ...] = (), masks: tuple[str, ...] = (),
                 endpoint: str | None = None):
        self.uri = prepared_uri.rstrip("/")
        self.endpoint = endpoint
        self.index = json.loads(storage.read_text(f"{self.uri}/{INDEX}", endpoint))
        self.labels, self.masks = labels, masks
        self.size = int(self.index["params"]["prep_size"])
        self._fs, self._root = storage.filesystem(self.uri, endpoint)

    @property
    def pool_size(self) -> int:
        return int(self.index["pool"])

    def _read(self, part: str, path: str) -> pa.Table:
        with self._fs.open(f"{self._root}/{part}/{path}", "rb") as fh:
            table = pq.read_table(fh)
        return table.filter(pc.equal(table.column("skip"), ""))

    def subset_files(self, size: int) -> list[tuple[str, int]]:
        """(file, how many of its valid rows belong to the size-N subset), in nested order."""
        if size > self.pool_size:
            raise ValueError(f"size {size} exceeds the prepared pool of {self.pool_size} images")
        out, have = [], 0
        for entry in self.index["files"]["pool"]:
            if have >= size:
                break
            take = min(entry["valid"], size - have)
            out.append((entry["path"], take))
            have += take
        return out

    def eval_split(self, name: str) -> Batch:
        tables = [self._read("eval", e["path"]) for e in self.index["files"]["eval"]]
        table = pa.concat_tables(tables) if tables else None
        if table is None:
            raise ValueError("the prepared data has no evaluation rows")
        table = table.filter(pc.equal(table.column("split"), name))
        return self._batch(table, np.arange(table.num_rows))

    def _batch(self, table: pa.Table, rows: np.ndarray) -> Batch:
        t = table.take(pa.array(rows, type=pa.int64()))
        s = self.size
        images = _stack(t.column("pixels"), (s, s), np.uint16)
        labels = np.stack([t.column(c).to_numpy(zero_copy_only=False).astype(np.float32) for c in self.labels],
                          axis=1) if self.labels else np.zeros((t.num_rows, 0), np.float32)
        reports = t.column("report").to_pylist() if "report" in t.column_names else [""] * t.num_rows
        masks = {m: _stack(t.column(m), (s, s), np.uint8) for m in self.masks}
        return Batch(images, labels, reports, t.column("row_id").to_numpy(), masks)

    def iter_batches(self, size: int, *, batch_size: int, rank: int = 0, world_size: int = 1, epoch: int = 0,
                     seed: int = 0, window_files: int = 4) -> Iterator[Batch]:
        """This rank's batches of one epoch over the size-N subset."""
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        rng = np.random.default_rng([seed, epoch])
        files = self.subset_files(size)
        order = rng.permutation(len(files))
        for w in range(0, len(order), window_files):
            tables = []
            for i in order[w:w + window_files]:
                path, take = files[i]
                tables.append(self._read("pool", path).slice(0, take))
            table = pa.concat_tables(tables)
            perm = rng.permutation(table.num_rows)
            perm = perm[: len(perm) // world_size * world_size]
            mine = perm[rank::world_size]
            for b in range(0, len(mine), batch_size):
                yield self._batch(table, mine[b:b + batch_size])

    def describe(self) -> dict[str, Any]:
        return {k: self.index[k] for k in ("fingerprint", "images", "decoded", "skipped", "pool", "eval")}
