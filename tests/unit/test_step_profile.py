"""tools/bench/step_profile.py on the tiny chat model: the bytes it charges to each FullyConnected and the
per-step counts it reports must match the compiled graph, or its GB/s column means nothing."""

from __future__ import annotations

import collections
import os
from pathlib import Path

import pytest

from tests.unit.bench_modules import bench_module

MODEL = Path(os.environ.get("OVMS_TEST_MODELS", Path(__file__).resolve().parents[2] / ".cache" / "test-models")) / "tiny-chat" / "1"
pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="test models not built (make test-models)")


@pytest.fixture(scope="module")
def step_profile():
    yield from bench_module("step_profile.py")


@pytest.fixture(scope="module")
def profile(step_profile):
    return step_profile.StepProfile(MODEL, steps=8)


def test_every_fully_connected_is_charged_at_least_its_weight_matrix(profile) -> None:
    runtime_fcs = [op for op in profile.profiled.get_runtime_model().get_ordered_ops()
                   if op.get_rt_info()["layerType"].astype(str).startswith("FullyConnected")]
    assert runtime_fcs and len(profile.fc_weights) == len(runtime_fcs)
    for op in runtime_fcs:
        weights = op.input(1).get_source_output()
        rows, columns = (dim.get_length() for dim in weights.get_partial_shape())
        matrix_bytes = rows * columns * weights.get_element_type().bitwidth // 8
        _, charged = profile.fc_weights[op.get_friendly_name()]
        assert matrix_bytes <= charged <= 2 * matrix_bytes  # scales and zero points are a fraction on top
    # Every weight a decode step multiplies by lives in the model's file; the compiled constants may be
    # wider (f32 scales), not wildly so.
    total = sum(charged for _, charged in profile.fc_weights.values())
    assert total <= 4 * (MODEL / "openvino_model.bin").stat().st_size


def test_breakdown_counts_each_weight_shape_once_per_step(profile) -> None:
    kinds, shapes = profile.breakdown()
    expected = collections.Counter(shape for shape, _ in profile.fc_weights.values())
    assert {shape: count for shape, (_, count, _) in shapes.items()} == pytest.approx(dict(expected))
    for shape, (spent, count, size) in shapes.items():
        # The plugin's times are whole microseconds: the tiny model's smallest FullyConnected may read 0.
        assert spent >= 0
        per_op = [charged for s, charged in profile.fc_weights.values() if s == shape]
        assert size == pytest.approx(sum(per_op))
    assert 0 < sum(spent for spent, _, _ in shapes.values()) <= sum(kinds.values())
    assert profile.step_ms() > 0


def test_per_step_times_come_from_the_difference_of_two_running_means(step_profile) -> None:
    # A 100 ms prompt, then steps of 2 ms: the plugin's running mean is 34.67 ms after 2 steps and
    # 4.94 ms after 40; the steps between the two snapshots took 2 ms each.
    prompt, step = 100.0, 2.0
    early = (prompt + 2 * step) / 3
    late = (prompt + 40 * step) / 41
    assert step_profile.steps_mean_ms(early, 3, late, 41) == pytest.approx(step)
    assert step_profile.steps_mean_ms(5.0, 3, 5.0 - 1e-9, 41) == pytest.approx(5.0)


def test_read_bandwidth_is_a_plausible_rate(step_profile) -> None:
    rate = step_profile.read_bandwidth_gbs(1, gib=0.0625, repeats=2)
    assert 0.1 < rate < 1000  # GB/s: anything outside is a unit error, not a machine
