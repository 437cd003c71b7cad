"""The generation worker's step loop on a fake pipeline: one request's failure stays its own, a
pipeline whose step() keeps failing ends the worker (the server then reloads the version)."""

from __future__ import annotations

import pytest

ov_genai = pytest.importorskip("openvino_genai")

from server.pipelines import generation_worker as gw  # noqa: E402


class Output:
    def __init__(self, ids: list[int], finish) -> None:
        self.generated_ids, self.generated_log_probs, self.finish_reason = ids, [0.0] * len(ids), finish


class Handle:
    def __init__(self, fail: bool) -> None:
        self.fail, self.cancelled = fail, False

    def can_read(self) -> bool:
        return True

    def read(self) -> dict:
        if self.fail:
            raise RuntimeError("boom")
        return {0: Output([5], ov_genai.GenerationFinishReason.LENGTH)}

    def get_status(self):
        return ov_genai.GenerationStatus.FINISHED

    def stop(self) -> None:
        pass

    def cancel(self) -> None:
        self.cancelled = True


class Tokenizer:
    def decode(self, batch: list[list[int]]) -> list[str]:
        return ["x" * len(ids) for ids in batch]


class Pipeline:
    def __init__(self, failing_ids: set[int] = frozenset(), step_fails: bool = False) -> None:
        self.handles: dict[int, Handle] = {}
        self.failing_ids, self.step_fails = failing_ids, step_fails

    def get_tokenizer(self) -> Tokenizer:
        return Tokenizer()

    def add_request(self, request_id: int, ids, config) -> Handle:
        self.handles[request_id] = Handle(request_id in self.failing_ids)
        return self.handles[request_id]

    def step(self) -> None:
        if self.step_fails:
            raise RuntimeError("broken")

    def has_non_finished_requests(self) -> bool:
        return False


class Connection:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, message: tuple) -> None:
        self.sent.append(message)


def updates(conn: Connection) -> dict[int, tuple]:
    return {u[0]: u for kind, batch in conn.sent if kind == "updates" for u in batch}


def test_a_request_that_fails_to_collect_fails_alone() -> None:
    pipeline, conn = Pipeline(failing_ids={1}), Connection()
    worker = gw.Worker(pipeline, conn)
    for request_id in (0, 1):
        worker._add(request_id, [1, 2], {"max_new_tokens": 1}, [], False)
    worker._step()
    sent = updates(conn)
    assert sent[0][1:5] == ("x", [5], [0.0], "length")  # the healthy request still gets its final update
    assert sent[1][5] == "generation failed: RuntimeError"
    assert pipeline.handles[1].cancelled  # its KV cache is freed
    assert not worker._active


def test_a_step_that_keeps_failing_ends_the_worker() -> None:
    pipeline, conn = Pipeline(step_fails=True), Connection()
    worker = gw.Worker(pipeline, conn)
    for attempt in range(gw.MAX_FAILED_STEPS):
        worker._add(attempt, [1], {"max_new_tokens": 1}, [], False)
        if attempt < gw.MAX_FAILED_STEPS - 1:
            worker._step()
            assert updates(conn)[attempt][5] == "generation failed: RuntimeError"
            assert pipeline.handles[attempt].cancelled
    with pytest.raises(SystemExit) as exit_info:
        worker._step()
    assert exit_info.value.code == gw.EXIT_PIPELINE_BROKEN
