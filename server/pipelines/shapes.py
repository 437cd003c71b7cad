"""Padded input shapes for embedding and rerank inferences.

The OpenVINO CPU plugin compiles kernels for every new input shape and keeps them: in the compiled
model's runtime cache (up to 5000 shapes by default) and in oneDNN's process-wide primitive cache, which
outlives the model. With raw micro-batches, each (rows, tokens) pair is a new shape: serving
random-length texts in batches of 1-32 grew a MiniLM process by 340 MB in 90 s, still growing.
Rounding the token width up to one of eight sizes per doubling (multiples of 4 below 32 tokens) and the
row count to one of four sizes per doubling bounds the shapes of a model (640 for 32 rows and 512
tokens): the same traffic then levelled off within a minute. Padding is masked out, and padded rows are
copies of a real row whose results are dropped, so it changes no result; it costs only the padded
compute. Widths once rounded up to multiples of 16, which made a batch of 17-25-token sentences run
32 tokens wide: 0.79-0.88 of TextEmbeddingPipeline's throughput on the same batches (about 1.0 unpadded).
"""

from __future__ import annotations

import numpy as np

MIN_WIDTH_STEP = 4  # below 32 tokens, widths are multiples of 4


def width_step(width: int) -> int:
    """The rounding step for `width` tokens: an eighth of the power of two below it, at least 4."""
    return max(MIN_WIDTH_STEP, (1 << max(width - 1, 1).bit_length() - 1) // 8)


def padded_width(width: int, limit: int) -> int:
    """`width` tokens rounded up to the next multiple of width_step(width) (at most an eighth more above
    32 tokens), never past `limit` (the model's window) unless `width` already is."""
    step = width_step(width)
    return max(width, min(-(-width // step) * step, limit))


def padded_rows(rows: int) -> int:
    """The smallest of 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, ... that holds `rows`: at most a
    quarter more rows than asked for, about 4 sizes per doubling."""
    size = 1
    while size < rows:
        size += max(1, (1 << (size.bit_length() - 1)) // 4)
    return size


def pad_batch(arrays: dict[str, np.ndarray], *, pad_values: dict[str, int], limit: int) -> dict[str, np.ndarray]:
    """[rows, width] integer inputs of one batch, padded to (padded_rows, padded_width): new columns hold
    the input's pad value (attention_mask 0), new rows repeat row 0. All arrays share one shape."""
    rows, width = next(iter(arrays.values())).shape
    shape = (padded_rows(rows), padded_width(width, limit))
    if shape == (rows, width):
        return arrays
    padded = {}
    for name, array in arrays.items():
        out = np.full(shape, pad_values.get(name, 0), dtype=array.dtype)
        out[:rows, :width] = array
        out[rows:] = out[0]
        padded[name] = out
    return padded
