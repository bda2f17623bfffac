"""Stream a prepared subset to training workers: one deterministic sample stream, bounded memory.

A size-N subset is the first N valid rows of the pool's nested order, read from the prefix of
shard files that holds them. The training stream is epochs 0, 1, ... concatenated; epoch e is one
permutation of the N rows, seeded by (seed, e): the file order shuffled, then the rows shuffled
within each window of a few files (one window's pixels in memory at a time). Global batch k is
stream samples [k*G, (k+1)*G), and rank r of W reads its contiguous G/W of each, so batches cross
window, file and epoch boundaries, no rank drops rows, and an epoch's tail runs into the next
epoch's head. The order comes from the index alone: a stream position (e.g. steps done x G) is
enough to resume mid-epoch, windows before it are never read, and the row ids of any span can be
listed from the row_id/skip columns without reading pixels. I/O: reads shards via fsspec.
"""

from __future__ import annotations

import concurrent.futures
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
    patients: list[str] = dataclasses.field(default_factory=list)  # hashed patient ids (shards never hold raw ids)


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


@dataclasses.dataclass(frozen=True)
class _Epoch:
    """One epoch of the stream, from the subset's per-file row counts alone (no I/O)."""

    windows: list[np.ndarray]  # indices into subset_files of each window's files, in read order
    bounds: np.ndarray  # (windows + 1,): epoch offset of each window's first sample; bounds[-1] == N
    local: np.ndarray  # (N,): each sample's row in its window (the window's files concatenated)
    position: np.ndarray  # (N,): each sample's position in the subset's nested order


def _epoch(takes: np.ndarray, seed: int, epoch: int, window_files: int) -> _Epoch:
    rng = np.random.default_rng([seed, epoch])
    first = np.concatenate([[0], np.cumsum(takes)])
    order = rng.permutation(len(takes))
    windows, bounds, local, position = [], [0], [], []
    for w in range(0, len(order), window_files):
        files = order[w:w + window_files]
        base = np.concatenate([np.arange(first[i], first[i] + takes[i]) for i in files])
        perm = rng.permutation(len(base))  # drawn for every window in turn: a window's order needs its predecessors'
        windows.append(files)
        bounds.append(bounds[-1] + len(base))
        local.append(perm)
        position.append(base[perm])
    return _Epoch(windows, np.asarray(bounds), np.concatenate(local), np.concatenate(position))


class _Layouts:
    """Epoch layouts of one (subset, seed), the latest kept: consumers walk the stream forwards."""

    def __init__(self, takes: np.ndarray, seed: int, window_files: int):
        self.takes, self.seed, self.window_files = takes, seed, window_files
        self.size = int(takes.sum())
        self._last: tuple[int, _Epoch] | None = None

    def __call__(self, epoch: int) -> _Epoch:
        if self._last is None or self._last[0] != epoch:
            self._last = (epoch, _epoch(self.takes, self.seed, epoch, self.window_files))
        return self._last[1]

    def spans(self, lo: int, hi: int) -> Iterator[tuple[int, int, int, int]]:
        """(epoch, window, a, b) pieces of stream samples [lo, hi), a:b epoch offsets within one window."""
        n = self.size
        for e in range(lo // n, (hi - 1) // n + 1):
            layout = self(e)
            a, b = max(lo - e * n, 0), min(hi - e * n, n)
            w = int(np.searchsorted(layout.bounds, a, side="right")) - 1
            while a < b:
                end = min(b, int(layout.bounds[w + 1]))
                if end > a:
                    yield e, w, a, end
                a, w = end, w + 1


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
        patients = t.column("patient").to_pylist() if "patient" in t.column_names else [""] * t.num_rows
        return Batch(images, labels, reports, t.column("row_id").to_numpy(), masks, patients)

    def _takes(self, size: int) -> tuple[list[tuple[str, int]], np.ndarray]:
        if size < 1:
            raise ValueError(f"a stream needs a subset of at least one image, got size {size}")
        files = self.subset_files(size)
        return files, np.array([take for _, take in files], dtype=np.int64)

    def _window(self, files: list[tuple[str, int]], window: np.ndarray) -> pa.Table:
        return pa.concat_tables([self._read("pool", files[i][0]).slice(0, files[i][1])
                                 for i in window if files[i][1]])

    def iter_batches(self, size: int, *, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                     start: int = 0, stop: int | None = None, epoch: int = 0, window_files: int = 4) -> Iterator[Batch]:
        """This rank's batches of the size-N subset's stream, over stream samples [start, stop).

        Global batch k is samples [k*G, (k+1)*G), G = batch_size * world_size; rank r yields its
        slice [k*G + r*batch_size, k*G + (r+1)*batch_size) of each, clipped to [start, stop) (so
        only a clipped batch is short, and a rank whose slice is empty yields nothing for it).
        ``stop`` defaults to one epoch after ``start``; ``epoch`` moves both by epoch*N, so
        ``epoch=e`` alone is epoch e. Training passes start=steps done x G and stop=steps x G.
        """
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside world size {world_size}")
        if batch_size < 1 or start < 0:
            raise ValueError(f"need batch_size >= 1 and start >= 0, got {batch_size} and {start}")
        files, takes = self._takes(size)
        layouts = _Layouts(takes, seed, window_files)
        start += epoch * layouts.size
        stop = start + layouts.size if stop is None else stop
        g = batch_size * world_size
        key, table = None, None  # the one window in memory; the stream only moves forwards
        for k in range(start // g, -(-stop // g)):
            lo, hi = max(start, k * g + rank * batch_size), min(stop, k * g + (rank + 1) * batch_size)
            if lo >= hi:
                continue
            parts = []
            for e, w, a, b in layouts.spans(lo, hi):
                if key != (e, w):
                    if parts and parts[-1][0] is table:  # keep only this batch's rows of the window we leave
                        t, rows = parts[-1]
                        parts[-1] = (t.take(pa.array(rows, type=pa.int64())), np.arange(len(rows)))
                    key, table = (e, w), None  # drop the old window before reading the next
                    table = self._window(files, layouts(e).windows[w])
                parts.append((table, layouts(e).local[a:b]))
            if len(parts) == 1:
                yield self._batch(*parts[0])
            else:
                joined = pa.concat_tables([t.take(pa.array(rows, type=pa.int64())) for t, rows in parts])
                yield self._batch(joined, np.arange(joined.num_rows))

    def _subset_ids(self, files: list[tuple[str, int]]) -> np.ndarray:
        """Row id at each subset position, from the row_id/skip columns only (no pixels)."""
        def ids(entry: tuple[str, int]) -> np.ndarray:
            path, take = entry
            with self._fs.open(f"{self._root}/pool/{path}", "rb") as fh:
                table = pq.read_table(fh, columns=["row_id", "skip"])
            table = table.filter(pc.equal(table.column("skip"), ""))  # the same rows as _read keeps
            return table.column("row_id").to_numpy()[:take]

        with concurrent.futures.ThreadPoolExecutor(16) as pool:  # object stores: latency-bound, one file each
            return np.concatenate([np.zeros(0, np.int64), *pool.map(ids, files)])

    def stream_row_ids(self, size: int, *, seed: int = 0, start: int = 0, stop: int | None = None,
                       window_files: int = 4) -> np.ndarray:
        """Row ids of stream samples [start, stop) (all ranks, in stream order), as
        :meth:`iter_batches` yields them; ``stop`` defaults to one epoch after ``start``."""
        files, takes = self._takes(size)
        layouts = _Layouts(takes, seed, window_files)
        stop = start + layouts.size if stop is None else stop
        ids = self._subset_ids(files)
        pieces = [ids[layouts(e).position[a:b]] for e, _, a, b in layouts.spans(start, stop)] if stop > start else []
        return np.concatenate([np.zeros(0, np.int64), *pieces])

    def distinct_rows(self, size: int, samples: int, *, seed: int = 0, window_files: int = 4) -> int:
        """Distinct row ids among stream samples [0, samples): what a run of ``samples`` drew. One
        epoch at a time (memory O(N), not O(samples)), from the row_id/skip columns only."""
        files, takes = self._takes(size)
        layouts = _Layouts(takes, seed, window_files)
        n = layouts.size
        seen = np.zeros(n, dtype=bool)
        for e in range(-(-samples // n) if samples > 0 else 0):
            seen[layouts(e).position[: min(n, samples - e * n)]] = True
            if seen.all():
                break
        return int(np.unique(self._subset_ids(files)[seen]).size)

    def describe(self) -> dict[str, Any]:
        return {k: self.index[k] for k in ("fingerprint", "images", "decoded", "skipped", "pool", "eval")}
