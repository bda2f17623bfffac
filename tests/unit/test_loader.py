"""Reading fixed-shape arrays back out of the shards' binary columns."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from radscale.trainer.data.loader import _stack


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
