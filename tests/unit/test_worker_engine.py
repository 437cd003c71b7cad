"""GenerationEngine with its real worker process on tiny-chat: admission is bounded (429 at once), and a
worker that stops answering while requests are open is killed, its streams end with an error and the
engine reports itself broken (so the manager reloads the version)."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

pytest.importorskip("openvino_genai")

from server.errors import Overloaded  # noqa: E402
from server.pipelines import generation  # noqa: E402
from server.pipelines.generation import GenerationEngine  # noqa: E402
from server.pipelines.settings import GenerationSettings, PipelineSpec  # noqa: E402

MODEL = Path(os.environ.get("OVMS_TEST_MODELS", Path(__file__).resolve().parents[2] / ".cache" / "test-models")) / "tiny-chat" / "1"
LONG = {"max_new_tokens": 100000, "ignore_eos": True}

pytestmark = pytest.mark.skipif(not MODEL.is_dir(), reason="tiny-chat test model not built")


def engine(**settings: object) -> GenerationEngine:
    values = {"max_num_seqs": 1, "max_num_batched_tokens": 256, "cache_size": 0,
              "enable_prefix_caching": False, "dynamic_split_fuse": True,
              "max_queued_requests": 1, "stall_timeout_s": 120.0, **settings}
    spec = PipelineSpec(task="text_generation", settings=GenerationSettings(**values))
    return GenerationEngine(MODEL, spec, "chat", "1")


def test_a_full_queue_is_refused_at_once() -> None:
    subject = engine(max_num_seqs=1, max_queued_requests=1)

    async def scenario() -> None:
        running, waiting, refused = (subject.generate([1, 2, 3], LONG) for _ in range(3))
        await asyncio.wait_for(anext(running), 30)  # in the batch
        queued = asyncio.ensure_future(anext(waiting))  # waits for the only sequence slot
        await asyncio.sleep(0)
        with pytest.raises(Overloaded, match="queue is full"):
            await anext(refused)
        with pytest.raises(Overloaded):  # what a streaming caller asks before it sends headers
            subject.admit()
        await running.aclose()  # a slot frees up: the waiting request runs, and admission reopens
        await asyncio.wait_for(queued, 30)
        subject.admit().release()  # one slot free again (a reservation not used is given back)
        again = subject.generate([1, 2], {"max_new_tokens": 2, "ignore_eos": True})
        assert [u async for u in again][-1].finish_reason == "length"
        await waiting.aclose()

    try:
        asyncio.run(scenario())
    finally:
        subject.close()


def test_a_stopped_worker_is_killed_and_its_streams_end_with_an_error() -> None:
    subject = engine(stall_timeout_s=3.0)  # long enough for a first token on a loaded machine
    pid = subject._process.pid

    async def scenario() -> list:
        stream = subject.generate([1, 2, 3], LONG)
        await asyncio.wait_for(anext(stream), 30)
        os.kill(pid, signal.SIGSTOP)
        last = await asyncio.wait_for(_last(stream), 20)  # ends: no hang
        return last

    try:
        last = asyncio.run(scenario())
        assert last.error and "stopped responding" in last.error
        assert subject.broken and "stopped responding" in subject.broken
        subject._process.wait(10)  # SIGKILLed, although stopped
    finally:
        try:
            os.kill(pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        subject.close()


async def _last(stream):
    last = None
    async for update in stream:
        last = update
    return last


def test_running_and_waiting_gauges_follow_the_pipelines_scheduler() -> None:
    from prometheus_client import REGISTRY

    labels = {"model": "gauges", "version": "1"}
    subject = GenerationEngine(MODEL, PipelineSpec(task="text_generation", settings=GenerationSettings(
        max_num_seqs=1, max_num_batched_tokens=256, cache_size=0, enable_prefix_caching=False,
        dynamic_split_fuse=False,  # with split-fuse, openvino-genai 2026.4 schedules beyond max_num_seqs
        max_queued_requests=2, stall_timeout_s=120.0)), "gauges", "1")

    def load() -> tuple[float, float]:
        return (REGISTRY.get_sample_value("ovms_num_requests_running", labels),
                REGISTRY.get_sample_value("ovms_num_requests_waiting", labels))

    async def until(expected: tuple[float, float]) -> None:  # bounded poll: the worker reports after its steps
        for _ in range(3000):
            if load() == expected:
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"running, waiting = {load()}, expected {expected}")

    async def scenario() -> None:
        reserved = subject.admit()  # admitted, not started
        assert load() == (0, 1)
        # (1, 2) needs one worker step after the second add and lasts while the first request runs: 3000
        # tokens, about a second here (200 tokens ended within 51-105 ms, about when the first poll looked).
        running = subject.generate([1, 2, 3], {"max_new_tokens": 3000, "ignore_eos": True})
        queued = subject.generate([4, 5], LONG)
        await asyncio.wait_for(anext(running), 30)
        waiting_first = asyncio.ensure_future(anext(queued))  # the only sequence slot is taken
        await until((1, 2))  # one scheduled; one queued in the pipeline, one reservation
        reserved.release()  # counted by the server itself: no worker step needed
        await until((1, 1))
        assert (await asyncio.wait_for(_last(running), 60)).finish_reason == "length"  # frees the slot
        assert (await asyncio.wait_for(waiting_first, 30)).token_ids
        await until((1, 0))
        await queued.aclose()
        await until((0, 0))

    try:
        asyncio.run(scenario())
    finally:
        subject.close()


def test_a_gauge_another_engine_overwrote_is_set_again_within_the_refresh_period(monkeypatch) -> None:
    """The engines of a version reloaded in place write the same gauges, and the draining one zeroes
    them when it closes. Each engine sets a gauge only when its own value changes, so a value written by
    the other one stays until the refresh (GAUGE_REFRESH_S) sets every gauge again."""
    from prometheus_client import REGISTRY

    from server import metrics

    labels = {"model": "reloaded", "version": "1"}
    subject = GenerationEngine(MODEL, PipelineSpec(task="text_generation", settings=GenerationSettings(
        max_num_seqs=1, max_num_batched_tokens=256, cache_size=0, enable_prefix_caching=False,
        dynamic_split_fuse=True, max_queued_requests=1, stall_timeout_s=120.0)), "reloaded", "1")
    assert subject.defaults["detokenizer"] == "vocabulary"  # the worker decodes in Python (vocab_decoder.py)

    def engine_requests() -> float | None:
        return REGISTRY.get_sample_value("ovms_engine_requests", labels)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        stream = subject.generate([1, 2, 3], LONG)
        await asyncio.wait_for(anext(stream), 30)
        assert engine_requests() == 1  # its one request, the same after every step
        monkeypatch.setattr(generation, "GAUGE_REFRESH_S", 3600.0)
        metrics.ENGINE_REQUESTS.labels("reloaded", "1").set(0)  # what a closing sibling engine writes
        for _ in range(5):
            await asyncio.wait_for(anext(stream), 30)
        assert engine_requests() == 0  # unchanged on its side: not written again
        monkeypatch.setattr(generation, "GAUGE_REFRESH_S", 1.0)
        deadline = loop.time() + 60
        while engine_requests() != 1:  # only the refresh can write it now
            assert loop.time() < deadline, "the engine never set its figures again"
            await asyncio.wait_for(anext(stream), 30)
        await stream.aclose()

    try:
        asyncio.run(scenario())
    finally:
        subject.close()
