"""A request whose grammar breaks pipeline.step() fails alone: the real Worker on the real tiny-chat
ContinuousBatchingPipeline (in this process) rebuilds its pipeline and the requests beside the bad one go
on where they were, token for token."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ov_genai = pytest.importorskip("openvino_genai")

from server.pipelines import generation_worker as gw  # noqa: E402

MODEL = Path(os.environ.get("OVMS_TEST_MODELS", Path(__file__).resolve().parents[2] / ".cache" / "test-models")) / "tiny-chat" / "1"
SETTINGS = {"max_num_seqs": 8, "max_num_batched_tokens": 256, "cache_size": 0, "enable_prefix_caching": False,
            "dynamic_split_fuse": True}
PLUGIN = {"KV_CACHE_PRECISION": "f32", "INFERENCE_PRECISION_HINT": "f32"}  # bit-exact on CPU: the continuation must match an uninterrupted run
LONG = {"max_new_tokens": 200, "ignore_eos": True}
BAD_SCHEMA = {"max_new_tokens": 20, "json_schema": '{"type": "nonsense"}'}  # passes validate(), fails in step()

pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="tiny-chat test model not built")


class Connection:
    def __init__(self) -> None:
        self.sent: list[tuple] = []

    def send(self, message: tuple) -> None:
        self.sent.append(message)

    def of(self, request_id: int) -> list[tuple]:
        return [u for _, batch, *_ in self.sent for u in batch if u[0] == request_id]


def build() -> ov_genai.ContinuousBatchingPipeline:
    return ov_genai.ContinuousBatchingPipeline(str(MODEL), gw.scheduler_config(SETTINGS), "CPU", PLUGIN)


def run_to_end(worker: gw.Worker, limit: int = 2000) -> None:
    for _ in range(limit):
        if not worker._active:
            return
        worker._step()
    raise AssertionError("requests did not finish")


def tokens(updates: list[tuple]) -> list[int]:
    return [t for u in updates for t in u[2]]


PROMPTS = [[1, 2, 3], [4, 5, 6, 7], [8, 9]]


@pytest.fixture(scope="module")
def reference() -> dict[int, list[int]]:
    """The same three requests with nothing going wrong."""
    conn = Connection()
    worker = gw.Worker(build(), conn, rebuild=build)
    for request_id, prompt in enumerate(PROMPTS):
        worker._add(request_id, prompt, LONG, [], False)
    run_to_end(worker)
    return {request_id: tokens(conn.of(request_id)) for request_id in range(len(PROMPTS))}


def test_a_bad_grammar_fails_alone_and_the_others_continue(reference: dict[int, list[int]], capfd) -> None:
    conn = Connection()
    rebuilds = []

    def counted_build() -> ov_genai.ContinuousBatchingPipeline:
        rebuilds.append(1)
        return build()

    worker = gw.Worker(build(), conn, rebuild=counted_build)
    for request_id, prompt in enumerate(PROMPTS):
        worker._add(request_id, prompt, LONG, [], False)
    for _ in range(10):  # the three are well under way
        worker._step()
    worker._add(3, [1, 2], BAD_SCHEMA, [], False)
    run_to_end(worker)

    (bad,) = conn.of(3)
    assert bad[4] is None and bad[5] == gw.STEP_FAILED
    assert rebuilds == [1]
    for request_id in range(len(PROMPTS)):
        updates = conn.of(request_id)
        assert [u[5] for u in updates if u[5]] == []
        assert updates[-1][4] == "length"
        assert tokens(updates) == reference[request_id]  # 200 tokens, the same as without the failure
        assert len(tokens(updates)) == 200
    assert "generation_step_failed" in capfd.readouterr().err  # logged with its traceback

    worker._add(4, [3, 2, 1], {"max_new_tokens": 7, "ignore_eos": True}, [], False)  # the new pipeline serves
    run_to_end(worker)
    assert conn.of(4)[-1][4] == "length" and len(tokens(conn.of(4))) == 7


def test_a_failing_rebuild_ends_the_worker() -> None:
    conn = Connection()

    def broken_build() -> ov_genai.ContinuousBatchingPipeline:
        raise RuntimeError("no memory")

    worker = gw.Worker(build(), conn, rebuild=broken_build)
    worker._add(0, [1, 2, 3], LONG, [], False)
    worker._step()
    worker._add(1, [1, 2], BAD_SCHEMA, [], False)
    with pytest.raises(SystemExit) as exit_info:
        worker._step()
    assert exit_info.value.code == gw.EXIT_PIPELINE_BROKEN
    assert conn.of(0)[-1][5] == conn.of(1)[-1][5] == gw.STEP_FAILED  # nobody is left waiting
