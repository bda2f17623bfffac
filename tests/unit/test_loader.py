"""The loader: fixed-shape arrays read back out of the shards' binary columns, and the training
stream (true epochs over the size-N subset, rank slices, resumption) over small shards written here."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from radscale.trainer.data.loader import PreparedDataset, _stack


def _rows(rng, n, shape, dtype, empty=()):
    return [b"" if i in empty else rng.integers(0, 200, shape).astype(dtype).tobytes() for i in range(n)]


@pytest.mark.parametrize("kind", [pa.binary(), pa.large_binary()])
def test_stack_reads_every_chunk_and_slice_and_zero_fills_empty_values(kind):
    rng = np.random.default_rng(0)
    first, second = _rows(rng, 7, (3, 4), np.uint16, empty={2}), _rows(rng, 5, (3, 4), np.uint16)
    sliced = pa.array(first, kind).slice(1, 5)  # an array with a non-zero offset into its buffers
    column = pa.chunked_array([sliced, pa.array([], kind), pa.array(second, kind)])
    got = _stack(column, (3, 4), np.uint16)
    want = [np.frombuffer(b, np.uint16).reshape(3, 4) if b else np.zeros((3, 4), np.uint16)
            for b in first[1:6] + second]
    np.testing.assert_array_equal(got, np.stack(want))
    assert got.dtype == np.uint16 and not got[1].any()


def test_stack_refuses_a_value_of_another_shape():
    column = pa.chunked_array([pa.array([np.zeros((2, 2), np.uint8).tobytes(), b"\0" * 3])])
    with pytest.raises(ValueError, match=r"\(2, 2\) uint8"):
        _stack(column, (2, 2), np.uint8)
    assert _stack(pa.chunked_array([], pa.binary()), (2, 2), np.uint8).shape == (0, 2, 2)


# ---- the training stream, over shards written without Ray -----------------------------------------

SIDE = 2
SKIP = "decode-error"


def write_shards(root, rows_per_file: list[int], skipped: frozenset[int] = frozenset()) -> PreparedDataset:
    """Pool files in nested order with consecutive row ids; rows in ``skipped`` carry a skip reason
    and no pixels, as prepare writes them. Each image is filled with its row id."""
    import json

    import pyarrow.parquet as pq

    (root / "pool").mkdir(parents=True)
    entries, row = [], 0
    for f, count in enumerate(rows_per_file):
        ids = np.arange(row, row + count, dtype=np.int64)
        row += count
        skip = ["" if int(i) not in skipped else SKIP for i in ids]
        pixels = [b"" if s else np.full((SIDE, SIDE), i, np.uint16).tobytes() for i, s in zip(ids, skip, strict=True)]
        table = pa.table({"row_id": ids, "patient": [f"p{i}" for i in ids], "report": [f"r{i}" for i in ids],
                          "pixels": pa.array(pixels, pa.large_binary()), "skip": skip})
        path = f"part-{f:03d}.parquet"
        pq.write_table(table, root / "pool" / path)
        entries.append({"path": path, "rows": count, "valid": skip.count("")})
    index = {"params": {"prep_size": SIDE}, "pool": sum(e["valid"] for e in entries),
             "files": {"pool": entries, "eval": []}}
    (root / "index.json").write_text(json.dumps(index))
    return PreparedDataset(f"file://{root}")


@pytest.fixture
def ds(tmp_path):
    # uneven files and one with skipped rows: sizes fall mid-file and mid-window
    return write_shards(tmp_path, [10, 7, 10, 3, 10, 9, 10], skipped=frozenset({12, 13, 30, 55}))


def subset(ds: PreparedDataset, n: int) -> list[int]:
    """The first n valid row ids in nested order."""
    return [i for i in range(100) if i not in {12, 13, 30, 55}][:n]


def global_batches(ds, n, *, batch, world, steps, seed=0, start=0):
    """Each step's global batch (ranks' slices in rank order), from a rank-by-rank read."""
    per_rank = [list(ds.iter_batches(n, batch_size=batch, rank=r, world_size=world, seed=seed,
                                     start=start * batch * world, stop=steps * batch * world))
                for r in range(world)]
    assert all(len(b) == steps - start for b in per_rank)
    out = []
    for step in zip(*per_rank, strict=True):
        for b in step:
            assert len(b.row_ids) == batch, "every step gets a full batch on every rank"
            np.testing.assert_array_equal(b.images[:, 0, 0], b.row_ids)  # each row's own pixels
            assert b.patients == [f"p{i}" for i in b.row_ids]
        out.append(np.concatenate([b.row_ids for b in step]))
    return out


@pytest.mark.parametrize("n", [5, 8, 23, 40, 55])
@pytest.mark.parametrize("world", [1, 2])
def test_every_epoch_is_one_pass_over_the_subset_and_batches_cross_its_end(ds, n, world):
    batch = 3
    g = batch * world
    steps = -(-5 * n // (2 * g))  # about 2.5 epochs: N is not a multiple of G, the stream ends mid-epoch
    stream = np.concatenate(global_batches(ds, n, batch=batch, world=world, steps=steps))
    drawn = steps * g
    assert len(stream) == drawn
    want = subset(ds, n)
    for e in range(drawn // n):  # every whole epoch holds each subset row exactly once
        assert sorted(stream[e * n:(e + 1) * n].tolist()) == want
    tail = stream[drawn // n * n:]
    assert len(set(tail.tolist())) == len(tail) and set(tail.tolist()) <= set(want)
    assert len(set(stream.tolist())) == min(n, drawn)
    assert drawn / n == pytest.approx(steps * g / n)  # the true epochs a result records
    # the driver's measure reads only ids, and agrees with what the ranks yielded
    np.testing.assert_array_equal(ds.stream_row_ids(n, stop=drawn), stream)
    assert ds.distinct_rows(n, drawn) == min(n, drawn)


@pytest.mark.parametrize("n,steps", [(40, 3), (55, 9), (23, 1)])
def test_fewer_samples_than_the_subset_are_all_distinct(ds, n, steps):
    stream = np.concatenate(global_batches(ds, n, batch=3, world=2, steps=steps))
    assert len(set(stream.tolist())) == min(n, steps * 6) == ds.distinct_rows(n, steps * 6)


def test_skipped_rows_do_not_shorten_an_epoch(ds):
    n = 30  # spans the file with skipped rows 12, 13 and the one with 30
    epoch = ds.stream_row_ids(n)
    assert len(epoch) == n and sorted(epoch.tolist()) == subset(ds, n)
    assert not {12, 13, 30} & set(epoch.tolist())
    got = [b.row_ids for b in ds.iter_batches(n, batch_size=4)]  # one epoch by default
    assert [len(r) for r in got] == [4] * 7 + [2]  # only the epoch's clipped end is short
    np.testing.assert_array_equal(np.concatenate(got), epoch)


@pytest.mark.parametrize("world", [1, 2])
def test_resuming_mid_epoch_continues_the_same_order(ds, world):
    n, steps, resume = 23, 14, 5  # step 5 x 6 samples: 7 into epoch 1, mid-window
    whole = global_batches(ds, n, batch=3, world=world, steps=steps, seed=7)
    resumed = global_batches(ds, n, batch=3, world=world, steps=steps, seed=7, start=resume)
    for a, b in zip(whole[resume:], resumed, strict=True):
        np.testing.assert_array_equal(a, b)


def test_the_global_stream_does_not_depend_on_the_world_size(ds):
    one = global_batches(ds, 40, batch=4, world=1, steps=15, seed=2)
    two = global_batches(ds, 40, batch=2, world=2, steps=15, seed=2)
    np.testing.assert_array_equal(np.concatenate(one), np.concatenate(two))


def test_a_resume_reads_no_window_before_its_position(ds, monkeypatch):
    n, batch = 55, 5
    read = []
    real = PreparedDataset._read
    monkeypatch.setattr(PreparedDataset, "_read", lambda self, part, path: read.append(path) or real(self, part, path))
    epoch1 = ds.stream_row_ids(n, start=n)
    start = n + n - 2 * batch  # the last two batches of epoch 1
    got = np.concatenate([b.row_ids for b in ds.iter_batches(n, batch_size=batch, start=start, stop=2 * n)])
    np.testing.assert_array_equal(got, epoch1[-2 * batch:])
    assert len(read) == 3, read  # the epoch's last window (7 files in windows of 4), nothing before it


def test_a_new_seed_reorders_the_same_rows(ds):
    a, b = ds.stream_row_ids(40, seed=1), ds.stream_row_ids(40, seed=2)
    assert a.tolist() != b.tolist() and sorted(a.tolist()) == sorted(b.tolist()) == subset(ds, 40)
    assert ds.stream_row_ids(40, seed=1).tolist() == a.tolist(), "the same seed, the same order"
    assert ds.stream_row_ids(40, seed=1, start=40).tolist() != a.tolist(), "each epoch reshuffles"


def test_subsets_stay_nested_prefixes(ds):
    small, big = set(ds.stream_row_ids(20).tolist()), set(ds.stream_row_ids(40).tolist())
    assert len(small) == 20 and len(big) == 40 and small < big
    with pytest.raises(ValueError, match="prepared pool of 55 images"):
        ds.subset_files(56)
    with pytest.raises(ValueError, match="rank 2 outside world size 2"):
        next(ds.iter_batches(10, batch_size=2, rank=2, world_size=2))
