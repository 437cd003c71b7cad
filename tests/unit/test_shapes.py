"""Padded inference shapes: bounded in number, never smaller than the batch, padding inert."""

from __future__ import annotations

import numpy as np

from server.pipelines import shapes


def test_rows_round_up_by_at_most_a_quarter() -> None:
    sizes = sorted({shapes.padded_rows(n) for n in range(1, 257)})
    assert sizes[:12] == [1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16]
    for n in range(1, 257):
        assert n <= shapes.padded_rows(n) <= max(n, int(n * 1.25) + 1)
    assert len([s for s in sizes if s <= 32]) == 16


def test_widths_round_up_by_at_most_an_eighth_within_the_window() -> None:
    sizes = sorted({shapes.padded_width(width, 512) for width in range(1, 513)})
    assert sizes[:9] == [4, 8, 12, 16, 20, 24, 28, 32, 36]  # multiples of 4 below 32 tokens
    assert sizes[-9:] == [256, 288, 320, 352, 384, 416, 448, 480, 512]  # then eight sizes per doubling
    assert len(sizes) == 40
    for width in range(1, 513):
        padded = shapes.padded_width(width, 512)
        assert width <= padded <= 512 and padded - width < max(4, width / 8)
        assert shapes.padded_width(padded, 512) == padded  # a padded width is a fixed point
    assert shapes.padded_width(25, 512) == 28  # the 17-25-token sentences once ran 32 wide
    assert shapes.padded_width(100, 100) == 100  # the window caps the rounding
    assert shapes.padded_width(130, 120) == 130  # but never cuts a row


def test_pad_batch_masks_new_columns_and_repeats_row_zero() -> None:
    ids = np.array([[101, 7, 102], [101, 102, 0]], dtype=np.int64)
    mask = np.array([[1, 1, 1], [1, 1, 0]], dtype=np.int64)
    padded = shapes.pad_batch({"input_ids": ids, "attention_mask": mask}, pad_values={"input_ids": 9}, limit=512)
    assert padded["input_ids"].shape == padded["attention_mask"].shape == (2, 4)
    assert (padded["input_ids"][:, :3] == ids).all() and (padded["input_ids"][:, 3:] == 9).all()
    assert (padded["attention_mask"][:, 3:] == 0).all()
    three = shapes.pad_batch({"input_ids": np.vstack([ids, ids[:1]] * 3)[:9]}, pad_values={}, limit=512)["input_ids"]
    assert three.shape == (10, 4) and (three[9] == three[0]).all()


def test_exact_shapes_are_left_alone() -> None:
    ids = np.ones((4, 32), dtype=np.int64)
    assert shapes.pad_batch({"input_ids": ids}, pad_values={}, limit=512)["input_ids"] is ids
