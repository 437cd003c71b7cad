import asyncio
import threading

import pytest
from prometheus_client import REGISTRY
from structlog.testing import capture_logs

from server.errors import BadRequest, EngineFailure, Overloaded
from server.pipelines.batching import ItemFailed, MicroBatcher
from server.pipelines.vocab_join import WORDPIECE, Vocabulary
from server.services import embeddings as embeddings_service

TIMEOUT = 10  # a hang fails the test instead of stalling the suite


class Gate:
    """Holds the first batch on the worker thread until the test opens it."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.opened = threading.Event()

    def hold(self) -> None:
        if not self.started.is_set():
            self.started.set()
            assert self.opened.wait(TIMEOUT)

    async def wait_started(self) -> None:
        assert await asyncio.to_thread(self.started.wait, TIMEOUT)


async def test_concurrent_requests_share_batches_and_keep_order() -> None:
    batches: list[list[int]] = []
    threads: set[str] = set()

    def run(items: list[int]) -> list[int]:
        batches.append(items)
        threads.add(threading.current_thread().name)
        return [i * 10 for i in items]

    batcher = MicroBatcher(run, max_batch_size=8, wait_s=0.01, name="t")
    results = await asyncio.gather(*(batcher.submit([i, i + 100]) for i in range(6)))
    assert results == [[i * 10, (i + 100) * 10] for i in range(6)]
    assert sum(len(b) for b in batches) == 12
    assert max(len(b) for b in batches) == 8  # requests were merged up to the limit
    assert len(threads) == 1  # one worker thread: the pipeline is never called concurrently
    batcher.close()


async def test_a_poisoned_item_fails_only_its_request() -> None:
    batches: list[list[str]] = []

    def run(items: list[str]) -> list[str]:
        batches.append(items)
        if "poison" in items:
            raise TypeError("incompatible function arguments")
        return [item.upper() for item in items]

    batcher = MicroBatcher(run, max_batch_size=16, wait_s=0.01, name="t")
    good = [batcher.submit([f"a{i}", f"b{i}"]) for i in range(30)]
    poisoned = batcher.submit(["fine", "also fine", "ok", "poison", "more"])
    outcomes = await asyncio.wait_for(asyncio.gather(*good, poisoned, return_exceptions=True), TIMEOUT)
    assert outcomes[:30] == [[f"A{i}", f"B{i}"] for i in range(30)]
    failure = outcomes[30]
    assert isinstance(failure, ItemFailed) and failure.index == 3  # its index within the request
    assert isinstance(failure.cause, TypeError)
    assert any("poison" in b and len(b) > 5 for b in batches)  # it really was co-batched with others
    assert await batcher.submit(["again"]) == ["AGAIN"]
    batcher.close()


async def test_a_failure_no_single_item_explains_is_an_engine_failure() -> None:
    def run(items: list[str]) -> list[str]:
        if len(items) > 1:
            raise RuntimeError("fails only in company")
        return items

    batcher = MicroBatcher(run, max_batch_size=4, wait_s=0, name="t")
    with pytest.raises(EngineFailure):
        await asyncio.wait_for(batcher.submit(["x", "y"]), TIMEOUT)
    batcher.close()


async def test_a_wrong_number_of_results_fails_the_batch_loudly() -> None:
    def run(items: list[str]) -> list[str]:
        return items[:-1] if len(items) > 1 else items

    batcher = MicroBatcher(run, max_batch_size=8, wait_s=0.01, name="t")
    with capture_logs() as logs:
        outcomes = await asyncio.wait_for(asyncio.gather(
            batcher.submit(["a", "b"]), batcher.submit(["c"]), return_exceptions=True), TIMEOUT)
    assert all(isinstance(o, EngineFailure) for o in outcomes)  # none left pending
    assert [e for e in logs if e["event"] == "batch_result_count_mismatch" and e["log_level"] == "error"]
    assert await batcher.submit(["z"]) == ["z"]
    batcher.close()


async def test_admission_refuses_at_once_beyond_max_queued_items() -> None:
    gate, seen = Gate(), []

    def run(items: list[str]) -> list[str]:
        seen.extend(items)
        gate.hold()
        return items

    batcher = MicroBatcher(run, max_batch_size=2, wait_s=0, name="t", max_queued_items=10)
    first = asyncio.create_task(batcher.submit(["r0", "r1"]))
    await gate.wait_started()  # its items left the queue for the running batch
    queued = asyncio.create_task(batcher.submit([f"q{i}" for i in range(8)]))
    await asyncio.sleep(0)  # let it enqueue
    assert batcher.queued_items == 8
    with pytest.raises(Overloaded):
        await batcher.submit(["x1", "x2", "x3"])  # 8 + 3 > 10: refused before queuing
    assert batcher.queued_items == 8 and len(batcher._queue) == 1  # nothing kept for the refused request
    fits = asyncio.create_task(batcher.submit(["y1", "y2"]))  # 8 + 2 fits
    gate.opened.set()
    assert await asyncio.wait_for(asyncio.gather(first, queued, fits), TIMEOUT)
    assert not any(item.startswith("x") for item in seen)
    assert batcher.queued_items == 0
    batcher.close()


async def test_a_cancelled_request_frees_its_queued_items() -> None:
    gate = Gate()

    def run(items: list[int]) -> list[int]:
        gate.hold()
        return items

    batcher = MicroBatcher(run, max_batch_size=4, wait_s=0, name="t", max_queued_items=100)
    big = asyncio.create_task(batcher.submit(list(range(90))))
    await gate.wait_started()
    assert batcher.queued_items == 86
    big.cancel()
    with pytest.raises(asyncio.CancelledError):
        await big
    assert batcher.queued_items == 0
    gate.opened.set()
    assert await asyncio.wait_for(batcher.submit(list(range(100))), TIMEOUT) == list(range(100))
    batcher.close()


async def test_a_small_request_is_not_stuck_behind_a_huge_one() -> None:
    gate, batches = Gate(), []

    def run(items: list[str]) -> list[str]:
        batches.append(list(items))
        gate.hold()
        return items

    batcher = MicroBatcher(run, max_batch_size=8, wait_s=0, name="t", max_queued_items=2000)
    huge = asyncio.create_task(batcher.submit([f"big{i}" for i in range(1000)]))
    await gate.wait_started()
    small = asyncio.create_task(batcher.submit(["small"]))
    await asyncio.sleep(0)
    gate.opened.set()
    assert await asyncio.wait_for(small, TIMEOUT) == ["small"]
    assert not huge.done()  # the small one finished first
    assert "small" in batches[1]  # served by the very next batch
    assert await asyncio.wait_for(huge, TIMEOUT) == [f"big{i}" for i in range(1000)]
    assert [b[i] for b in batches[2:] for i in range(len(b))] == [f"big{i}" for i in range(15, 1000)]
    batcher.close()


async def test_round_robin_takes_one_item_per_request_in_turn() -> None:
    gate, batches = Gate(), []

    def run(items: list[str]) -> list[str]:
        batches.append(list(items))
        gate.hold()
        return items

    batcher = MicroBatcher(run, max_batch_size=6, wait_s=0, name="t")
    first = asyncio.create_task(batcher.submit(["warm"]))
    await gate.wait_started()
    requests = [asyncio.create_task(batcher.submit([f"{name}{i}" for i in range(4)])) for name in "abc"]
    await asyncio.sleep(0)
    gate.opened.set()
    await asyncio.wait_for(asyncio.gather(first, *requests), TIMEOUT)
    assert batches[1:] == [["a0", "b0", "c0", "a1", "b1", "c1"], ["a2", "b2", "c2", "a3", "b3", "c3"]]
    batcher.close()


async def test_batch_wait_applies_only_when_the_worker_was_idle() -> None:
    gate, sleeps = Gate(), []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def run(items: list[str]) -> list[str]:
        gate.hold()
        return items

    # No refill wait: "e" below must find the worker idle, not just back from a batch.
    batcher = MicroBatcher(run, max_batch_size=2, wait_s=0.5, name="t", sleep=sleep, refill_wait_s=0)
    first = asyncio.create_task(batcher.submit(["a"]))
    await gate.wait_started()
    assert sleeps == [0.5]  # idle worker: waited for company once
    later = asyncio.create_task(batcher.submit(["b", "c", "d"]))  # queued while a batch runs
    await asyncio.sleep(0)
    gate.opened.set()
    assert await asyncio.wait_for(asyncio.gather(first, later), TIMEOUT) == [["a"], ["b", "c", "d"]]
    assert sleeps == [0.5]  # the two back-to-back batches after it started at once
    assert await batcher.submit(["e"]) == ["e"]
    assert sleeps == [0.5, 0.5]  # idle again: waits again
    batcher.close()


async def test_the_next_batch_waits_for_the_callers_of_the_last_one_to_come_back() -> None:
    """Closed-loop clients: a batch ran while a, b and c queued; the caller of that batch sends again
    right after its answer. Without the refill wait, a-c would run alone and x after them, and the
    batches would keep alternating between the queued few and the returning rest."""
    gate, batches = Gate(), []

    def run(items: list[str]) -> list[str]:
        batches.append(items)
        gate.hold()
        return items

    batcher = MicroBatcher(run, max_batch_size=8, wait_s=0, name="t", refill_wait_s=TIMEOUT)
    first = asyncio.create_task(batcher.submit(["w"]))
    await gate.wait_started()
    queued = [asyncio.create_task(batcher.submit([name])) for name in "abc"]
    await asyncio.sleep(0)
    gate.opened.set()
    assert await asyncio.wait_for(first, TIMEOUT) == ["w"]
    again = await asyncio.wait_for(batcher.submit(["x"]), TIMEOUT)  # ends the wait at once: 4 queued
    assert again == ["x"] and await asyncio.gather(*queued) == [["a"], ["b"], ["c"]]
    assert batches == [["w"], ["a", "b", "c", "x"]]
    batcher.close()


async def test_the_refill_wait_ends_when_nobody_comes_back() -> None:
    gate, batches = Gate(), []

    def run(items: list[str]) -> list[str]:
        batches.append(items)
        gate.hold()
        return items

    batcher = MicroBatcher(run, max_batch_size=8, wait_s=0, name="t", refill_wait_s=0.01)
    first = asyncio.create_task(batcher.submit(["w"]))
    await gate.wait_started()
    queued = asyncio.create_task(batcher.submit(["a"]))
    await asyncio.sleep(0)
    gate.opened.set()
    assert await asyncio.wait_for(asyncio.gather(first, queued), TIMEOUT) == [["w"], ["a"]]
    assert batches == [["w"], ["a"]]
    batcher.close()


async def test_a_full_batch_does_not_wait_even_when_idle() -> None:
    sleeps = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    batcher = MicroBatcher(lambda items: items, max_batch_size=2, wait_s=0.5, name="t", sleep=sleep)
    assert await batcher.submit(["a", "b"]) == ["a", "b"]
    assert sleeps == []
    batcher.close()


async def test_queue_wait_is_observed_once_per_item_and_counts_the_time_behind_a_running_batch() -> None:
    name = "queue-wait-test"
    gate, hold_s = Gate(), 0.05

    def wait_figures() -> tuple[float, float]:
        sample = REGISTRY.get_sample_value
        labels = {"model": name}
        return (sample("ovms_batch_queue_wait_seconds_count", labels) or 0.0,
                sample("ovms_batch_queue_wait_seconds_sum", labels) or 0.0)

    def run(items: list[str]) -> list[str]:
        gate.hold()
        return items

    batcher = MicroBatcher(run, max_batch_size=2, wait_s=0, name=name)
    first = asyncio.create_task(batcher.submit(["a"]))
    await gate.wait_started()
    count, total = wait_figures()
    assert count == 1  # "a" was observed as its batch started, before it ran
    later = asyncio.create_task(batcher.submit(["b", "c", "d"]))  # waits behind the held batch
    await asyncio.sleep(hold_s)  # the time "b", "c" and "d" spend queued
    gate.opened.set()
    await asyncio.wait_for(asyncio.gather(first, later), TIMEOUT)
    count_after, total_after = wait_figures()
    assert count_after - count == 3  # one observation per item, over two batches
    assert total_after - total >= 3 * hold_s
    batcher.close()


# ---- services/embeddings on top of the batcher


class FakeEmbedder:
    max_length = 8

    def __init__(self, batcher: MicroBatcher) -> None:
        self.batcher = batcher
        self.threads: list[str] = []

    async def embed(self, texts: list[str]):
        results = await self.batcher.submit(texts)
        return [v for v, _ in results], [n for _, n in results]

    def vocabulary(self) -> Vocabulary:
        self.threads.append(threading.current_thread().name)
        return Vocabulary(["hello", "world", "##s"], WORDPIECE)


async def test_embed_names_the_failing_input_under_the_route_param() -> None:
    def run(texts: list[str]):
        if "\ud800" in texts:
            raise TypeError("not a valid str")
        return [(len(t), 1) for t in texts]

    embedder = FakeEmbedder(MicroBatcher(run, max_batch_size=8, wait_s=0.01, name="t"))
    bad = embeddings_service.embed(embedder, ["ok", "\ud800"], truncate=True, param="texts")
    good = embeddings_service.embed(embedder, ["fine"], truncate=True, param="input")
    failure, result = await asyncio.wait_for(asyncio.gather(bad, good, return_exceptions=True), TIMEOUT)
    assert isinstance(failure, BadRequest) and failure.param == "texts" and "Input 1" in failure.message
    assert result == ([4], 1)
    embedder.batcher.close()


async def test_token_ids_are_joined_off_the_event_loop() -> None:
    embedder = FakeEmbedder(MicroBatcher(lambda items: items, max_batch_size=8, wait_s=0, name="t"))
    ids = [[0, 1, 2], [1]]
    assert await embeddings_service.prepare_input(embedder, ids, token_ids="model") == ["hello worlds", "world"]
    assert embedder.threads and embedder.threads[0] != threading.current_thread().name
    assert await embeddings_service.prepare_input(embedder, "text", token_ids="refuse") == ["text"]
    with pytest.raises(BadRequest, match="check_embedding_ctx_length=False"):
        await embeddings_service.prepare_input(embedder, ids, token_ids="refuse")
    embedder.batcher.close()


async def one_running_one_queued() -> tuple[Gate, MicroBatcher, asyncio.Task, asyncio.Task]:
    """A batcher of one-item batches: request "a" held in its lane by the gate, "b" queued behind it."""
    gate = Gate()

    def run(items: list[str]) -> list[str]:
        gate.hold()
        return items

    batcher = MicroBatcher(run, max_batch_size=1, wait_s=0, name="t")
    running = asyncio.create_task(batcher.submit(["a"]))
    await gate.wait_started()
    waiting = asyncio.create_task(batcher.submit(["b"]))
    await asyncio.sleep(0)  # let it enqueue
    return gate, batcher, running, waiting


async def test_closing_fails_waiting_and_running_requests_instead_of_leaving_them_hanging() -> None:
    from server.errors import ModelNotReady

    gate, batcher, running, waiting = await one_running_one_queued()
    closing = asyncio.create_task(asyncio.to_thread(batcher.close))  # a drain timeout: requests remain
    for task in (running, waiting):
        with pytest.raises(ModelNotReady):
            await asyncio.wait_for(task, TIMEOUT)
    with pytest.raises(ModelNotReady):
        await batcher.submit(["c"])
    gate.opened.set()
    await asyncio.wait_for(closing, TIMEOUT)


async def test_a_wrong_result_count_found_while_isolating_is_an_engine_failure_not_a_bad_input() -> None:
    gate = Gate()

    def run(items: list[str]) -> list[str]:
        if items == ["hold"]:
            gate.hold()
        if len(items) > 1:
            raise RuntimeError("a batch failure that sends the batcher looking for the culprit")
        return [] if items == ["odd"] else items  # the engine answers "odd" with no result at all

    batcher = MicroBatcher(run, max_batch_size=2, wait_s=0, name="t")
    first = asyncio.create_task(batcher.submit(["hold"]))
    await gate.wait_started()
    odd = asyncio.create_task(batcher.submit(["odd"]))
    good = asyncio.create_task(batcher.submit(["good"]))
    await asyncio.sleep(0)
    gate.opened.set()
    assert await asyncio.wait_for(first, TIMEOUT) == ["hold"]
    assert await asyncio.wait_for(good, TIMEOUT) == ["good"]
    with pytest.raises(EngineFailure):
        await asyncio.wait_for(odd, TIMEOUT)
    batcher.close()


class Gates:
    """Holds every batch on its lane thread until the test opens them all; counts the batches inside."""

    def __init__(self) -> None:
        self.inside = threading.Semaphore(0)
        self.opened = threading.Event()
        self.batches: list[list] = []
        self.threads: set[str] = set()
        self._lock = threading.Lock()

    def run(self, items: list) -> list:
        with self._lock:
            self.batches.append(list(items))
            self.threads.add(threading.current_thread().name)
        self.inside.release()
        assert self.opened.wait(TIMEOUT)
        return [item * 10 for item in items]

    async def wait_inside(self, count: int) -> None:
        for _ in range(count):
            assert await asyncio.to_thread(self.inside.acquire, True, TIMEOUT)


async def test_lanes_run_batches_at_once_each_a_share_of_the_known_items() -> None:
    """8 requests queued together on 2 lanes: two batches of 4 run at the same time on two threads
    (with one lane they would be one batch of 8), and every caller gets its own results."""
    gates = Gates()
    batcher = MicroBatcher(gates.run, max_batch_size=8, wait_s=0, name="t", lanes=2)
    requests = [asyncio.create_task(batcher.submit([i])) for i in range(8)]
    await gates.wait_inside(2)  # both batches are inside run() together: neither waited for the other
    assert sorted(len(batch) for batch in gates.batches) == [4, 4]
    assert len(gates.threads) == 2
    gates.opened.set()
    assert await asyncio.wait_for(asyncio.gather(*requests), TIMEOUT) == [[i * 10] for i in range(8)]
    batcher.close()


async def test_a_free_lane_takes_a_lone_request_while_the_other_lane_is_busy() -> None:
    gates = Gates()
    batcher = MicroBatcher(gates.run, max_batch_size=8, wait_s=0, name="t", lanes=2)
    first = asyncio.create_task(batcher.submit([1]))
    await gates.wait_inside(1)
    second = asyncio.create_task(batcher.submit([3]))
    await gates.wait_inside(1)  # started beside the held batch
    assert gates.batches == [[1], [3]]
    gates.opened.set()
    assert await asyncio.wait_for(asyncio.gather(first, second), TIMEOUT) == [[10], [30]]
    batcher.close()


async def test_one_large_request_is_shared_by_the_lanes() -> None:
    gates = Gates()
    batcher = MicroBatcher(gates.run, max_batch_size=8, wait_s=0, name="t", lanes=2)
    request = asyncio.create_task(batcher.submit(list(range(10))))
    await gates.wait_inside(2)
    assert sorted(gates.batches) == [[0, 1, 2, 3, 4], [5, 6, 7, 8, 9]]  # either lane thread may note first
    gates.opened.set()
    assert await asyncio.wait_for(request, TIMEOUT) == [i * 10 for i in range(10)]
    batcher.close()


async def test_all_lanes_busy_queues_the_rest_for_the_next_free_lane() -> None:
    gates = Gates()
    batcher = MicroBatcher(gates.run, max_batch_size=8, wait_s=0, name="t", lanes=2, refill_wait_s=0)
    held = [asyncio.create_task(batcher.submit([i])) for i in (1, 2)]
    await gates.wait_inside(2)
    later = asyncio.create_task(batcher.submit([3]))
    for _ in range(20):  # the dispatcher runs on this loop: a free lane would have taken it by now
        await asyncio.sleep(0)
    assert len(batcher._running) == 2 and batcher.queued_items == 1
    gates.opened.set()
    assert await asyncio.wait_for(asyncio.gather(*held, later), TIMEOUT) == [[10], [20], [30]]
    assert gates.batches[2] == [3]
    batcher.close()


async def test_closing_fails_the_requests_of_every_running_lane() -> None:
    from server.errors import ModelNotReady

    gates = Gates()
    batcher = MicroBatcher(gates.run, max_batch_size=1, wait_s=0, name="t", lanes=2)
    running = [asyncio.create_task(batcher.submit([i])) for i in (1, 2)]
    await gates.wait_inside(2)
    closing = asyncio.create_task(asyncio.to_thread(batcher.close))
    for task in running:
        with pytest.raises(ModelNotReady):
            await asyncio.wait_for(task, TIMEOUT)
    gates.opened.set()
    await asyncio.wait_for(closing, TIMEOUT)


def test_a_batcher_needs_a_lane() -> None:
    with pytest.raises(ValueError):
        MicroBatcher(lambda items: items, max_batch_size=1, wait_s=0, name="t", lanes=0)


async def test_a_poisoned_item_fails_only_its_request_with_lanes() -> None:
    def run(items: list[str]) -> list[str]:
        if "poison" in items:
            raise TypeError("incompatible function arguments")
        return [item.upper() for item in items]

    batcher = MicroBatcher(run, max_batch_size=16, wait_s=0, name="t", lanes=4)
    good = [batcher.submit([f"a{i}", f"b{i}"]) for i in range(30)]
    poisoned = batcher.submit(["fine", "poison", "more"])
    results = await asyncio.wait_for(asyncio.gather(*good, poisoned, return_exceptions=True), TIMEOUT)
    assert results[:30] == [[f"A{i}", f"B{i}"] for i in range(30)]
    assert isinstance(results[30], ItemFailed) and results[30].index == 1
    batcher.close()


async def test_a_refilled_batch_does_not_hold_a_free_lane_waiting_for_its_items_again() -> None:
    """Two batches of two finish; two of their callers come back as y1 and y2. y1 fills the refill
    (a lane's share is one item here); y2, with a lane free, starts at once instead of waiting out
    the refill for items that y1's batch already took."""
    release, holding = threading.Event(), threading.Event()

    def run(items: list[str]) -> list[str]:
        if "hold" in items:
            holding.set()
        if any(item.startswith(("hold", "y")) for item in items):
            assert release.wait(TIMEOUT)
        return items

    batcher = MicroBatcher(run, max_batch_size=8, wait_s=0, name="t", lanes=3, refill_wait_s=TIMEOUT)
    held = asyncio.create_task(batcher.submit(["hold"]))
    assert await asyncio.to_thread(holding.wait, TIMEOUT)
    await asyncio.wait_for(asyncio.gather(*(batcher.submit([f"x{i}"]) for i in range(4))), TIMEOUT)
    again = [asyncio.create_task(batcher.submit([name])) for name in ("y1", "y2")]
    for _ in range(20):  # the dispatcher runs on this loop
        await asyncio.sleep(0)
    assert batcher.queued_items == 0 and len(batcher._running) == 3  # hold, y1 and y2 all run
    release.set()
    assert await asyncio.wait_for(asyncio.gather(held, *again), TIMEOUT) == [["hold"], ["y1"], ["y2"]]
    batcher.close()


@pytest.mark.parametrize("lanes", [1, 2])
async def test_one_client_in_a_loop_waits_for_company_once_whatever_the_lanes(lanes: int) -> None:
    sleeps = []

    async def sleep(seconds: float) -> None:
        sleeps.append(seconds)

    batcher = MicroBatcher(lambda items: items, max_batch_size=8, wait_s=0.01, name="t", sleep=sleep,
                           lanes=lanes, refill_wait_s=TIMEOUT)
    for i in range(20):
        assert await asyncio.wait_for(batcher.submit([i]), TIMEOUT) == [i]
    assert sleeps == [0.01]  # only the first request found the worker idle
    batcher.close()


@pytest.mark.parametrize("lanes", [1, 2])
async def test_a_failure_while_settling_fails_the_batch_instead_of_leaving_it_waiting(
        lanes: int, monkeypatch: pytest.MonkeyPatch) -> None:
    batcher = MicroBatcher(lambda items: items, max_batch_size=8, wait_s=0, name="t", lanes=lanes)
    settle = batcher._settle
    calls = []

    def broken_once(batch, outcomes):
        calls.append(batch)
        if len(calls) == 1:
            raise RuntimeError("a bug in settling")
        settle(batch, outcomes)

    monkeypatch.setattr(batcher, "_settle", broken_once)
    with capture_logs() as logs, pytest.raises(EngineFailure):
        await asyncio.wait_for(batcher.submit(["a"]), TIMEOUT)
    assert any(entry["event"] == "batch_settle_failed" for entry in logs)
    assert await asyncio.wait_for(batcher.submit(["b"]), TIMEOUT) == ["b"]  # the batcher still serves
    batcher.close()


async def test_a_batch_dispatched_after_the_lanes_shut_down_is_retryable_not_an_engine_failure() -> None:
    """close() shuts the executor down from another thread before its _stop reaches the event loop; a
    batch dispatched in between gets ModelNotReady (retry), as the requests _stop fails do."""
    from server.errors import ModelNotReady

    gate, batcher, first, queued = await one_running_one_queued()
    batcher._closed = True  # what close() does first; its _stop has not run yet
    batcher._executor.shutdown(wait=False)
    gate.opened.set()
    assert await asyncio.wait_for(first, TIMEOUT) == ["a"]
    with pytest.raises(ModelNotReady):
        await asyncio.wait_for(queued, TIMEOUT)
    batcher.close()
