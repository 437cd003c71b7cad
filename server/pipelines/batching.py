"""Micro-batching: items from concurrent requests are gathered into one blocking pipeline call.

Embedding and rerank pipelines run several times faster on a batch than item by item, so each loaded
model owns one MicroBatcher, with one lane (thread) per batch that may run at once: one with OpenVINO's
default LATENCY hint, two per inference stream with THROUGHPUT (lanes.py). While the lanes are busy,
new items queue up and form the next batch; when the worker was idle, a short wait lets a lone
request pick up company. After a batch, the next one waits up to REFILL_WAIT_S for as many requests
as the batch answered (clients that send again right after an answer): without it, 8 such clients
settled into batches of 1 and 7 for good (mean 4.0), with it into batches of 8 (mean 7.8).

Batches take items round-robin across waiting requests, so a small request is not stuck behind a
huge one. Admission is bounded by max_queued_items (Overloaded at once beyond it). A batch that
raises is re-run per request and bisected, so only the requests holding a failing item fail (with
ItemFailed, naming the item), and co-batched requests still get their results.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Awaitable, Callable, Generic, Sequence, TypeVar

import structlog

from server import metrics
from server.errors import EngineFailure, ModelNotReady, Overloaded, PayloadTooLarge

T = TypeVar("T")
R = TypeVar("R")

# After a batch, how long the next one waits at most for the requests of the batch to come back.
REFILL_WAIT_S = 0.002
DEFAULT_MAX_QUEUED_ITEMS = 8192  # the loader passes the server's --max-queued-items; this serves direct callers

log = structlog.get_logger("server.batching")


class ItemFailed(Exception):
    """An item of a request failed in the pipeline on its own; `index` is its position in the request."""

    def __init__(self, index: int, cause: BaseException | None = None) -> None:
        super().__init__(f"item {index} failed: {type(cause).__name__ if cause else 'error'}")
        self.index = index
        self.cause = cause


class _WrongCount(RuntimeError):
    """The pipeline returned a different number of results than items: an engine bug, never the input's."""


@dataclass(eq=False)
class _Job:
    """One submit() call: its items, results so far and the future its caller awaits."""

    items: Sequence
    future: asyncio.Future
    results: list = field(init=False)
    next: int = 0  # first item not yet handed to a batch
    submitted: float = field(default_factory=time.perf_counter)  # for the queue-wait metric
    done: int = 0  # items with a result
    queued: bool = True  # in the round-robin queue (has undispatched items)

    def __post_init__(self) -> None:
        self.results = [None] * len(self.items)


def _by_job(batch: list[tuple["_Job", int]]) -> dict["_Job", list[int]]:
    """Each request of a batch with the positions of its items in it, in batch order."""
    groups: dict[_Job, list[int]] = {}
    for job, index in batch:
        groups.setdefault(job, []).append(index)
    return groups


class MicroBatcher(Generic[T, R]):
    def __init__(self, run_batch: Callable[[list[T]], Sequence[R]], *, max_batch_size: int, wait_s: float,
                 name: str, max_queued_items: int | None = None,
                 sleep: Callable[[float], Awaitable[object]] = asyncio.sleep,
                 refill_wait_s: float = REFILL_WAIT_S, lanes: int = 1) -> None:
        """`run_batch` is called from `lanes` threads at once when lanes > 1: it must be thread-safe then."""
        if lanes < 1:
            raise ValueError("a batcher needs at least one lane")
        self._run_batch = run_batch
        self._name = name
        self._batch_size = metrics.BATCH_SIZE.labels(name)
        self._queue_wait = metrics.BATCH_QUEUE_WAIT.labels(name)
        self._max = max_batch_size
        self._wait = wait_s
        self._max_queued = DEFAULT_MAX_QUEUED_ITEMS if max_queued_items is None else max_queued_items
        self._sleep = sleep  # injectable so tests can observe when the batcher waits
        self._refill_wait = refill_wait_s
        self._lanes = lanes
        self._executor = ThreadPoolExecutor(lanes, thread_name_prefix=f"batch-{name}")
        self._queue: deque[_Job] = deque()  # requests with undispatched items, in round-robin order
        self._queued = 0  # undispatched items over all requests
        self._wake: asyncio.Event | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._running: dict[asyncio.Task, list[_Job]] = {}  # requests of the batches in the lanes now
        self._target, self._refill_until = 0, 0.0  # the refill the next batch waits for (see _run_lane)
        self._closed = False

    @property
    def queued_items(self) -> int:
        return self._queued

    async def submit(self, items: Sequence[T]) -> list[R]:
        """Results in item order. Raises Overloaded without queuing anything when the queue is full,
        ItemFailed when one of these items fails in the pipeline, EngineFailure on an engine bug."""
        if not items:
            return []
        if self._closed:
            raise ModelNotReady("This model version was unloaded; retry to reach the current one")
        if self._queued + len(items) > self._max_queued:  # refuse before allocating anything for it
            if len(items) > self._max_queued:
                raise PayloadTooLarge(f"This request needs {len(items)} model inputs; this model queues at most "
                                  f"{self._max_queued}: send fewer or shorter inputs")
            raise Overloaded(f"This model has {self._queued} inputs waiting and queues at most "
                             f"{self._max_queued}: retry shortly")
        loop = asyncio.get_running_loop()
        if self._worker is None:
            self._loop, self._wake = loop, asyncio.Event()
            # An empty context: the worker outlives the request that started it, so it must not log its id.
            self._worker = loop.create_task(self._work(), context=contextvars.Context())
        job = _Job(items, loop.create_future())
        self._queue.append(job)
        self._queued += len(items)
        self._wake.set()
        try:
            return await job.future
        finally:
            self._drop(job)  # caller gone (cancelled, deadline): free its queued items now

    def _drop(self, job: _Job) -> None:
        if job.queued:
            job.queued = False
            self._queue.remove(job)
            self._queued -= len(job.items) - job.next

    def _fail(self, job: _Job, error: BaseException) -> None:
        self._drop(job)
        if not job.future.done():
            job.future.set_exception(error)

    def _take(self) -> list[tuple[_Job, int]]:
        """Next batch: one item from each waiting request in turn (each request's items in order), at
        most a lane's share of the items known (queued and running): 32 closed-loop clients on 2 lanes
        settle into batches of 16 taking turns rather than one of 31 and one of 1."""
        batch: list[tuple[_Job, int]] = []
        running = sum(len(jobs) for jobs in self._running.values())
        limit = min(self._max, -(-(self._queued + running) // self._lanes))
        while self._queue and len(batch) < limit:
            job = self._queue.popleft()
            batch.append((job, job.next))
            job.next += 1
            self._queued -= 1
            if job.next < len(job.items):
                self._queue.append(job)
            else:
                job.queued = False
        return batch

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        free = asyncio.BoundedSemaphore(self._lanes)  # a release too many raises instead of adding a lane
        idle = True
        while True:
            await free.acquire()
            while True:
                if self._queued < self._target:
                    await self._refill(self._target, self._refill_until)
                if self._queue:
                    break
                idle = not self._running  # a lane still runs: what comes next is not alone
                self._wake.clear()
                await self._wake.wait()
            # Only an idle worker waits for company: items that queued while a batch ran start at once.
            if idle and self._wait > 0 and self._queued < self._max:
                await self._sleep(self._wait)
            idle = False
            batch = self._take()
            self._target = 0  # this batch took the refill's items: later ones do not wait for them again
            if not batch:
                free.release()
                continue
            self._batch_size.observe(len(batch))
            started = time.perf_counter()
            for job, _ in batch:  # one observation per item: how long it waited for this batch
                self._queue_wait.observe(started - job.submitted)
            # The lane's task inherits the worker's empty context: it must not log a request's id either.
            lane = loop.create_task(self._run_lane(batch))
            self._running[lane] = [job for job, _ in batch]  # one entry per item
            lane.add_done_callback(lambda task: (self._running.pop(task, None), free.release()))

    async def _run_lane(self, batch: list[tuple[_Job, int]]) -> None:
        loop = asyncio.get_running_loop()
        try:
            try:
                outcomes = await loop.run_in_executor(self._executor, self._execute, batch)
            except Exception as exc:  # the isolation itself broke: never leave a caller waiting
                if self._closed:  # close() shut the lanes down before _stop reached this loop: retryable
                    error: Exception = ModelNotReady("This model version was unloaded while the request waited; retry")
                else:
                    log.error("batch_crashed", batcher=self._name, error=repr(exc)[:500])
                    error = EngineFailure("The model failed to process the request")
                outcomes = {job: error for job, _ in batch}
            self._settle(batch, outcomes)
        except Exception as exc:  # a bug in settling: fail this batch's callers rather than leave them waiting
            log.error("batch_settle_failed", batcher=self._name, error=repr(exc)[:500])
            for job in _by_job(batch):
                self._fail(job, EngineFailure("The model failed to process the request; the error was logged"))
        finally:
            # Clients that send one request after another (the common closed loop) come back right
            # after their answer: the next batch waits a moment for them, or a batch that ran beside a
            # few queued items splits into one of those few and one of the returning rest, for good.
            self._target = min(self._max, self._queued + len(_by_job(batch)))
            self._refill_until = loop.time() + self._refill_wait
            self._wake.set()  # a dispatcher waiting idle for items now waits for this refill instead

    async def _refill(self, target: int, until: float) -> None:
        """Wait until `target` items are queued or the loop's clock reaches `until`."""
        loop = asyncio.get_running_loop()
        while self._queued < target and (remaining := until - loop.time()) > 0:
            self._wake.clear()
            try:
                await asyncio.wait_for(self._wake.wait(), remaining)
            except TimeoutError:
                return

    def _settle(self, batch: list[tuple[_Job, int]], outcomes: dict) -> None:
        for job, indices in _by_job(batch).items():
            outcome = outcomes[job]
            if isinstance(outcome, BaseException):
                self._fail(job, outcome)
                continue
            if job.future.done():
                continue
            for index, result in zip(indices, outcome):  # lengths checked on the worker thread
                job.results[index] = result
            job.done += len(indices)
            if job.done == len(job.items):
                job.future.set_result(job.results)

    def _stop(self) -> None:
        self._worker.cancel()
        for lane in list(self._running):
            lane.cancel()
        for job in list(self._queue) + [job for jobs in self._running.values() for job in jobs]:
            self._fail(job, ModelNotReady("This model version was unloaded while the request waited; retry"))

    # ---- worker thread: only reads jobs' (immutable) items, never touches futures

    def _run(self, items: list[T]) -> list[R]:
        results = list(self._run_batch(items))
        if len(results) != len(items):
            raise _WrongCount(f"{len(results)} results for {len(items)} items")
        return results

    def _execute(self, batch: list[tuple[_Job, int]]) -> dict[_Job, list[R] | BaseException]:
        """Results per request of this batch (in the order its items appear), or the request's error."""
        groups = _by_job(batch)
        try:
            results = self._run([job.items[index] for job, index in batch])
        except _WrongCount as exc:
            log.error("batch_result_count_mismatch", batcher=self._name, items=len(batch), detail=str(exc))
            failure = EngineFailure(f"The model returned a wrong number of results for a batch of {len(batch)} "
                                    "inputs; the error was logged")
            return {job: failure for job in groups}
        except Exception as exc:
            log.warning("batch_failed_isolating", batcher=self._name, items=len(batch), requests=len(groups),
                        error=type(exc).__name__)
            return {job: self._run_request(job, indices, exc if len(groups) == 1 else None)
                    for job, indices in groups.items()}
        outcomes: dict[_Job, list[R] | BaseException] = {job: [] for job in groups}
        for (job, _), result in zip(batch, results):
            outcomes[job].append(result)
        return outcomes

    def _run_request(self, job: _Job, indices: list[int], failed: Exception | None) -> list[R] | BaseException:
        """Re-run one request's share of a failed batch; on failure, bisect to the item that fails alone."""
        indexed = [(index, job.items[index]) for index in indices]
        if failed is None:
            try:
                return self._run([item for _, item in indexed])
            except Exception as exc:
                failed = exc
        culprit = self._culprit(indexed, failed)
        if culprit is not None and isinstance(culprit[1], _WrongCount):  # an engine bug, not a bad input
            log.error("batch_result_count_mismatch", batcher=self._name, items=len(indices), detail=str(culprit[1]))
            return EngineFailure("The model returned a wrong number of results; the error was logged")
        if culprit is None:  # every part succeeds alone: the failure depended on the company
            log.error("batch_failure_not_isolated", batcher=self._name, items=len(indices), error=repr(failed)[:500])
            return EngineFailure("The model failed to process the request; the error was logged")
        index, cause = culprit
        log.info("batch_item_failed", batcher=self._name, index=index, error=type(cause).__name__)
        return ItemFailed(index, cause)

    def _culprit(self, indexed: list[tuple[int, T]], failed: Exception) -> tuple[int, Exception] | None:
        """An item of `indexed` (known to fail as a whole, with `failed`) that fails on its own."""
        if len(indexed) == 1:
            return indexed[0][0], failed
        middle = len(indexed) // 2
        for half in (indexed[:middle], indexed[middle:]):
            try:
                self._run([item for _, item in half])
            except Exception as exc:
                return self._culprit(half, exc)
        return None

    def close(self) -> None:
        """Called off the event loop when the model is released (no requests left, or the drain timed out:
        whatever still waits then fails instead of hanging)."""
        self._closed = True
        if self._worker is not None and self._loop is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._stop)
        self._executor.shutdown(wait=True)
