#!/usr/bin/env python3
"""Where one decode step's time goes inside OpenVINO, against what the memory could deliver.

One generated token reads every weight of the model once, so one stream's tokens/s cannot beat
(memory read bandwidth) / (weight bytes). This tool measures both sides on this machine:

- the read bandwidth with 1 and with all cores' threads (numpy sums of an int64 view of a 1 GiB array,
  best of 5; a float32 sum is limited by its adds on one core);
- decode steps of the model's stateful IR, compiled by the CPU plugin with its default properties
  (one sequence, PERF_COUNT on), after a 40-token prompt: the time of each kind of operation per step
  and, for the weight-carrying FullyConnected operations grouped by weight shape and type, the bytes
  they read and the rate at which they read them. The plugin reports each operation's mean over every
  inference since compile (the prompt included), so per-step times come from the difference of two
  snapshots: one after the warm-up steps, one after the last step.

It is a diagnosis, not a server benchmark: the continuous-batching pipeline runs the same FullyConnected
kernels on a paged-attention graph, and the weights dominate either way.

    .venv/bin/python tools/bench/step_profile.py --model smollm2-q4_1 llama1b-q4_0
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import markdown_table, software, text_table  # noqa: E402
from models import MODELS, model_dir  # noqa: E402

PROMPT_TOKENS = 40
WARMUP_STEPS = 4


def read_bandwidth_gbs(threads: int, gib: float = 1.0, repeats: int = 5) -> float:
    """Best read rate of `threads` threads summing disjoint parts of one array (numpy releases the GIL)."""
    data = np.ones(int(gib * (1 << 30)) // 8, dtype=np.int64)
    parts = np.array_split(data, threads)
    best = float("inf")
    for _ in range(repeats):
        workers = [threading.Thread(target=part.sum) for part in parts]
        began = time.perf_counter()
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        best = min(best, time.perf_counter() - began)
    return data.nbytes / best / 1e9


def _constant_bytes(runtime_op) -> int:
    """Bytes of an FC's constant inputs (weights, scales, zero points) as the compiled graph holds them."""
    total = 0
    for index in range(1, runtime_op.get_input_size()):
        source = runtime_op.input(index).get_source_output()
        if source.get_node().get_rt_info()["layerType"].astype(str) != "Const":
            continue
        shape = source.get_partial_shape()
        count = int(np.prod([dim.get_length() for dim in shape])) if shape.is_static else 0
        if count:
            total += count * source.get_element_type().bitwidth // 8
    return total


def steps_mean_ms(early_mean: float, early_count: int, late_mean: float, late_count: int) -> float:
    """The mean time of the inferences between two snapshots of a running mean (the plugin's figures)."""
    return max(0.0, (late_mean * late_count - early_mean * early_count) / (late_count - early_count))


class StepProfile:
    """Decode steps of one stateful IR on CPU with per-operation timing."""

    def __init__(self, version_dir: Path, steps: int) -> None:
        import openvino as ov

        core = ov.Core()
        model = core.read_model(version_dir / "openvino_model.xml")
        self.input_names = {port.get_any_name() for port in model.inputs}
        self.steps = steps
        self.plain = core.compile_model(model, "CPU")
        self.profiled = core.compile_model(model, "CPU", {"PERF_COUNT": True})
        self.fc_weights: dict[str, tuple[str, int]] = {}
        for op in self.profiled.get_runtime_model().get_ordered_ops():
            if op.get_rt_info()["layerType"].astype(str).startswith("FullyConnected"):
                weights = op.input(1).get_source_output()
                shape = f"{weights.get_partial_shape()} {weights.get_element_type().get_type_name()}"
                self.fc_weights[op.get_friendly_name()] = (shape, _constant_bytes(op))

    def _inputs(self, token_ids: list[int], start: int) -> dict:
        end = start + len(token_ids)
        inputs = {"input_ids": np.array([token_ids], dtype=np.int64),
                  "attention_mask": np.ones((1, end), dtype=np.int64)}
        if "position_ids" in self.input_names:
            inputs["position_ids"] = np.arange(start, end, dtype=np.int64)[None]
        if "beam_idx" in self.input_names:
            inputs["beam_idx"] = np.array([0], dtype=np.int32)
        return inputs

    def _decode(self, compiled, snapshot=None) -> list[float]:
        """Prompt, then self.steps one-token steps; `snapshot(request)` runs after the warm-up steps and
        after the last step. Returns the wall times of the steps after the warm-up."""
        request = compiled.create_infer_request()
        request.reset_state()
        request.infer(self._inputs(list(range(100, 100 + PROMPT_TOKENS)), 0))
        walls = []
        for step in range(self.steps):
            began = time.perf_counter()
            request.infer(self._inputs([200 + step], PROMPT_TOKENS + step))
            walls.append(time.perf_counter() - began)
            if snapshot and step in (WARMUP_STEPS - 1, self.steps - 1):
                snapshot(request)
        return walls[WARMUP_STEPS:]

    def step_ms(self) -> float:
        """Median decode step wall time without profiling."""
        return statistics.median(self._decode(self.plain)) * 1e3

    def breakdown(self) -> tuple[dict[str, float], dict[str, list[float]]]:
        """Per step: ms by operation kind; and per FC weight shape [ms, count, bytes]."""
        snapshots: list[dict[str, tuple[str, float]]] = []

        def snapshot(request) -> None:  # node -> (type, mean ms over the inferences so far)
            snapshots.append({info.node_name: (info.node_type, info.real_time.total_seconds() * 1e3)
                              for info in request.profiling_info if info.status == info.Status.EXECUTED})

        self._decode(self.profiled, snapshot)
        early, late = snapshots
        # Inferences counted by each snapshot: the prompt plus the steps so far.
        early_count, late_count = WARMUP_STEPS + 1, self.steps + 1
        kinds: collections.Counter = collections.Counter()
        shapes: dict[str, list[float]] = {}
        for node, (kind, late_mean) in late.items():
            spent = steps_mean_ms(early.get(node, (kind, 0.0))[1], early_count, late_mean, late_count)
            kinds[kind] += spent
            if node in self.fc_weights:
                shape, size = self.fc_weights[node]
                entry = shapes.setdefault(shape, [0.0, 0, 0])
                entry[0] += spent
                entry[1] += 1
                entry[2] += size
        return dict(kinds), shapes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", nargs="+", choices=sorted(MODELS), default=["smollm2-q4_1"],
                        help="benchmark models of tools/bench/models.py (smollm2-q4_1)")
    parser.add_argument("--steps", type=int, default=64, help="decode steps per measurement (64)")
    args = parser.parse_args(argv)
    if args.steps < WARMUP_STEPS + 2:
        parser.error(f"--steps must be at least {WARMUP_STEPS + 2}")
    cores = len(os.sched_getaffinity(0))
    print(f"Step profile: {software()}")
    one, every = read_bandwidth_gbs(1), read_bandwidth_gbs(cores)
    print(f"memory read bandwidth: {one:.1f} GB/s with 1 thread, {every:.1f} GB/s with {cores}")
    summary = []
    for name in args.model:
        version_dir = model_dir(name) / "1"
        profile = StepProfile(version_dir, args.steps)
        # What a token reads: every FC's compiled constants (one embedding row besides is negligible).
        weight_bytes = sum(size for _, size in profile.fc_weights.values())
        step = profile.step_ms()
        kinds, shapes = profile.breakdown()
        profiled_total = sum(kinds.values())
        rows = [[kind, f"{spent:.3f}", f"{spent / profiled_total:.0%}"]
                for kind, spent in sorted(kinds.items(), key=lambda item: -item[1])[:8]]
        print(f"\n{name}: decode step {step:.2f} ms without profiling; operations sum to {profiled_total:.2f} ms with it"
              f" (FullyConnected {sum(v[0] for v in shapes.values()) / profiled_total:.0%} of that)")
        print(text_table(["operation", "ms per step", "share"], rows))
        fc_rows = [[shape, f"{count:.0f}", f"{spent:.3f}", f"{spent / count * 1e3:.1f}", f"{size / 1e6:.1f}",
                    f"{size / (spent * 1e-3) / 1e9:.1f}"]
                   for shape, (spent, count, size) in sorted(shapes.items(), key=lambda item: -item[1][0])]
        print(text_table(["FC weights", "per step", "ms", "us each", "MB read", "GB/s"], fc_rows))
        bound = every * 1e9 / weight_bytes
        summary.append([name, f"{weight_bytes / 1e6:.0f}", f"{step:.2f}", f"{1e3 / step:.1f}", f"{bound:.0f}",
                        f"{1e3 / step / bound:.2f}", f"{weight_bytes / (step * 1e-3) / 1e9:.1f}"])
    header = ["model", "FC constants MB", "step ms", "tok/s", f"bound tok/s ({every:.0f} GB/s)", "of bound", "GB/s read"]
    print("\n" + text_table(header, summary))
    print("\nMarkdown:\n" + markdown_table(header, summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
