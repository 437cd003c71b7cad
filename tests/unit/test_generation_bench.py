"""tools/bench/generation.py's step-cycle figures: raw's steps are timed as the server's worker times its
own (each step() call, and the caller's time from one step's end to the next one's start), and the report
row puts the two side by side."""

from __future__ import annotations

import pytest

from tests.unit.bench_modules import bench_module


@pytest.fixture(scope="module")
def generation():
    yield from bench_module("generation.py")


def test_step_times_count_each_step_and_the_time_between_steps(generation) -> None:
    ticks = iter([0.000, 0.010, 0.0105, 0.0205, 0.0215, 0.0315])  # three 10 ms steps, 0.5 and 1 ms apart
    times = generation.StepTimes(clock=lambda: next(ticks))
    for _ in range(3):
        times.started()
        times.ended()
    notes = times.notes()
    assert notes["cycle_steps"] == 3
    assert notes["cycle_step_ms"] == pytest.approx(10.0)
    assert notes["cycle_between_ms"] == pytest.approx(0.75)  # the first step has nothing before it


def test_the_cycle_row_compares_the_servers_worker_with_raw(generation) -> None:
    server = generation.Run("server", 1, 1.0, [], {"cycle_step_ms": 10.0, "cycle_between_ms": 0.5, "cycle_steps": 64,
                                                   "request_wait_ms": 6.25})
    raw = generation.Run("raw", 1, 1.0, [], {"cycle_step_ms": 12.5, "cycle_between_ms": 0.1, "cycle_steps": 64})
    assert generation.cycle_row(server, raw, 1) == ["1", "10.00", "0.500", "4.8%", "6.25", "12.50", "0.100", "0.80"]
    assert generation.cycle_row(server, None, 4)[5:] == ["-", "-", "-"]
    # a server without the worker's histograms (an older build) gives no row rather than made-up figures
    assert generation.cycle_row(generation.Run("server", 1, 1.0, []), raw, 1) is None


def test_a_cycle_with_nothing_between_steps_shows_a_dash(generation) -> None:
    lone = generation.Run("server", 1, 1.0, [], {"cycle_step_ms": 10.0, "cycle_between_ms": float("nan"),
                                                 "cycle_steps": 1})
    assert generation.cycle_row(lone, None, 1)[2:5] == ["-", "-", "-"]  # (nor a request-wait figure)
