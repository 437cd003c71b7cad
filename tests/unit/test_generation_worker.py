"""The generation worker's step loop on a fake pipeline: one request's failure stays its own, a failed
step fails the requests it is blamed on and continues the others in a rebuilt pipeline, and a pipeline
whose step() keeps failing for no request's fault ends the worker (the server then reloads the version)."""

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
    return {u[0]: u for kind, batch, *_ in conn.sent if kind == "updates" for u in batch}


def test_a_request_that_fails_to_collect_fails_alone() -> None:
    pipeline, conn = Pipeline(failing_ids={1}), Connection()
    worker = gw.Worker(pipeline, conn)
    for request_id in (0, 1):
        worker._add(request_id, [1, 2], {"max_new_tokens": 1}, [], False)
    worker._step()
    sent = updates(conn)
    assert sent[0][1:5] == ("x", [5], [0.0], "length")  # the healthy request still gets its final update
    assert sent[1][5] == gw.STEP_FAILED  # no library class names
    assert pipeline.handles[1].cancelled  # its KV cache is freed
    assert not worker._active


class Running(Handle):
    """A request that produces one token per step and never ends by itself."""

    def read(self) -> dict:
        return {0: Output([7], ov_genai.GenerationFinishReason.NONE)}

    def get_status(self):
        return ov_genai.GenerationStatus.RUNNING


class RunningPipeline(Pipeline):
    def __init__(self, step_fails: bool = False) -> None:
        super().__init__(step_fails=step_fails)
        self.added: list[tuple[int, list[int], object]] = []

    def add_request(self, request_id: int, ids, config) -> Handle:
        self.added.append((request_id, ids.data.tolist()[0], config))
        self.handles[request_id] = Running(False)
        return self.handles[request_id]


def test_a_failed_step_fails_only_the_new_requests_and_continues_the_others() -> None:
    first, second = RunningPipeline(), RunningPipeline()
    conn = Connection()
    worker = gw.Worker(first, conn, rebuild=lambda: second)
    worker._add(10, [1, 2], {"max_new_tokens": 5, "min_new_tokens": 3}, [], False)
    worker._step()
    worker._step()  # request 10 has generated [7, 7]
    first.step_fails = True
    worker._add(11, [3], {"max_new_tokens": 5}, [], False)
    worker._step()
    assert updates(conn)[11][5] == gw.STEP_FAILED  # no library text
    assert [*worker._active] == [10]
    ((pipeline_id, prompt, config),) = second.added  # re-added as a continuation, ids restart
    assert pipeline_id == 0 and prompt == [1, 2, 7, 7]
    assert (config.max_new_tokens, config.min_new_tokens) == (3, 1)
    worker._step()
    assert worker._active[10].generated == [7, 7, 7]


def test_a_request_that_waited_for_a_slot_is_the_suspect_once_no_new_one_is() -> None:
    first, second = RunningPipeline(), RunningPipeline()
    conn = Connection()
    worker = gw.Worker(first, conn, rebuild=lambda: second)
    worker._add(0, [1], {"max_new_tokens": 9}, [], False)
    worker._add(1, [2], {"max_new_tokens": 9}, [], False)
    worker._step()
    worker._active[1].generated.clear()  # as if 1 still waited in the scheduler for a sequence slot
    first.step_fails = True
    worker._step()
    assert updates(conn)[1][5] == gw.STEP_FAILED
    assert [*worker._active] == [0] and second.added[0][1] == [1, 7]


def test_an_unexplained_failure_fails_all_and_repeated_ones_end_the_worker() -> None:
    pipelines = [RunningPipeline() for _ in range(gw.MAX_FAILED_STEPS)]
    conn = Connection()
    worker = gw.Worker(pipelines[0], conn, rebuild=lambda: pipelines.pop(0))
    pipelines.pop(0)
    for attempt in range(gw.MAX_FAILED_STEPS):
        worker._add(attempt, [1], {"max_new_tokens": 9}, [], False)
        worker._step()  # a good step: the request is no longer new
        worker._pipeline.step_fails = True
        if attempt < gw.MAX_FAILED_STEPS - 1:
            worker._step()
            assert updates(conn)[attempt][5] == gw.STEP_FAILED  # no suspect: every active request fails
            assert not worker._active
    with pytest.raises(SystemExit) as exit_info:
        worker._step()
    assert exit_info.value.code == gw.EXIT_PIPELINE_BROKEN


def test_without_a_rebuild_a_failed_step_ends_the_worker() -> None:
    conn = Connection()
    worker = gw.Worker(Pipeline(step_fails=True), conn)
    worker._add(0, [1], {"max_new_tokens": 1}, [], False)
    with pytest.raises(SystemExit) as exit_info:
        worker._step()
    assert exit_info.value.code == gw.EXIT_PIPELINE_BROKEN
    assert updates(conn)[0][5] == gw.STEP_FAILED


def test_a_busy_worker_with_nothing_to_say_sends_a_heartbeat_at_most_once_a_second(monkeypatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(gw.time, "monotonic", lambda: clock[0])
    conn = Connection()
    worker = gw.Worker(RunningPipeline(), conn)
    worker._send([])
    assert conn.sent == []  # just sent (at start): no heartbeat yet
    clock[0] += gw.HEARTBEAT_S
    worker._send([])
    worker._send([])
    assert conn.sent == [("updates", [], None, [])]  # a fake without get_metrics: no figures; no step ran


def test_failed_requests_hear_before_the_rebuild_which_is_announced() -> None:
    first, conn = RunningPipeline(), Connection()
    order: list[str] = []

    def rebuild() -> RunningPipeline:
        order.append(f"rebuild after {[kind for kind, *_ in conn.sent]}")
        return RunningPipeline()

    worker = gw.Worker(first, conn, rebuild=rebuild)
    worker._add(1, [1], {"max_new_tokens": 5}, [], False)
    first.step_fails = True
    worker._step()
    assert order == ["rebuild after ['updates', 'rebuilding']"]
    assert conn.sent[0][1][0][5] == gw.STEP_FAILED


class Metrics:
    cache_usage, max_cache_usage, kv_cache_size_in_bytes = 25.0, 50.0, 1024
    requests, scheduled_requests = 2, 2


class MeasuredPipeline(Pipeline):
    """Both requests are scheduled in the step; request 0 finishes in it, request 1 keeps running."""

    def add_request(self, request_id: int, ids, config) -> Handle:
        self.handles[request_id] = Handle(False) if request_id == 0 else Running(False)
        return self.handles[request_id]

    def get_metrics(self) -> Metrics:
        return Metrics()


def test_step_messages_carry_the_pipelines_figures() -> None:
    conn = Connection()
    worker = gw.Worker(MeasuredPipeline(), conn)
    worker._add(0, [1], {"max_new_tokens": 1}, [], False)
    worker._add(1, [2], {"max_new_tokens": 9}, [], False)
    worker._step()
    ((kind, batch, figures, _),) = conn.sent
    assert kind == "updates" and {u[0] for u in batch} == {0, 1}
    # percent -> fraction; of the two scheduled, the one that finished in this step is no longer running
    assert gw.EngineFigures(*figures) == gw.EngineFigures(0.25, 0.5, 1024, 2, 2, 1)


def test_an_idle_worker_steps_once_more_and_reports_idle_figures() -> None:
    class Idle(MeasuredPipeline):
        steps = 0

        def step(self) -> None:
            self.steps += 1

        def get_metrics(self) -> Metrics:
            idle = Metrics()
            idle.cache_usage = idle.requests = idle.scheduled_requests = 0
            return idle

    pipeline, conn = Idle(), Connection()
    worker = gw.Worker(pipeline, conn)
    worker._settle()
    assert pipeline.steps == 1  # frees the finished requests' KV-cache blocks
    assert conn.sent == [("updates", [], (0.0, 0.5, 1024, 0, 0, 0), [])]  # at once, not a rate-limited heartbeat;
    # the idle step is not a serving step: not timed


class Clock:
    """perf_counter for the worker: the fake pipeline moves it, so durations are exact."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class TimedPipeline(RunningPipeline):
    """Each step takes 10 ms; reading each request's output takes 1 ms."""

    def __init__(self, clock: Clock) -> None:
        super().__init__()
        self.clock = clock

    def step(self) -> None:
        self.clock.now += 0.010
        super().step()  # fails when step_fails is set

    def add_request(self, request_id: int, ids, config) -> Handle:
        clock = self.clock

        class SlowRead(Running):
            def read(self) -> dict:
                clock.now += 0.001
                return super().read()

        self.handles[request_id] = SlowRead(False)
        return self.handles[request_id]


def timings(conn: Connection) -> list[list[tuple]]:
    return [message[3] for message in conn.sent if message[0] == "updates"]


def test_each_step_message_carries_the_steps_duration_and_the_workers_time_before_it() -> None:
    clock, conn = Clock(), Connection()
    worker = gw.Worker(TimedPipeline(clock), conn, clock=clock)
    for request_id in (0, 1):
        worker._add(request_id, [1], {"max_new_tokens": 9}, [], False)
    worker._step()  # the first step of a busy period: nothing before it to count
    clock.now += 0.0005  # the loop, draining the pipe
    worker._step()
    (first,), (second,) = timings(conn)
    assert first[0] == pytest.approx(0.010) and first[1] is None
    # between: reading two requests' outputs (2 ms) after the first step, then the loop (0.5 ms)
    assert second[0] == pytest.approx(0.010) and second[1] == pytest.approx(0.0025)


def test_steps_without_a_message_are_reported_with_the_next_one(monkeypatch) -> None:
    monkeypatch.setattr(gw.time, "monotonic", lambda: 100.0)  # no heartbeat falls due in between
    clock, conn = Clock(), Connection()
    worker = gw.Worker(TimedPipeline(clock), conn, clock=clock)
    worker._add(0, [1], {"max_new_tokens": 9}, [], False)
    worker._step()
    worker._active[0].handle.can_read = lambda: False  # a step that produces nothing to send (a prompt chunk)
    worker._step()
    assert timings(conn) == [[(pytest.approx(0.010), None, ())]]  # no message for the silent step yet
    del worker._active[0].handle.can_read
    worker._step()
    assert [len(batch) for batch in timings(conn)] == [1, 2]


def test_an_idle_period_starts_the_between_steps_time_again() -> None:
    clock, conn = Clock(), Connection()
    pipeline = TimedPipeline(clock)
    worker = gw.Worker(pipeline, conn, clock=clock)
    worker._add(0, [1], {"max_new_tokens": 9}, [], False)
    worker._step()
    worker._active.clear()
    worker._settle()  # the last request ended: the worker waits for the next one
    clock.now += 5.0
    worker._add(1, [1], {"max_new_tokens": 9}, [], False)
    worker._step()
    assert [t[1] for batch in timings(conn) for t in batch] == [None, None]  # not 5 s between steps


def test_a_failed_step_is_not_timed_and_the_step_after_the_rebuild_starts_afresh() -> None:
    clock, conn = Clock(), Connection()
    first, second = TimedPipeline(clock), TimedPipeline(clock)
    worker = gw.Worker(first, conn, rebuild=lambda: second, clock=clock)
    worker._add(0, [1], {"max_new_tokens": 9}, [], False)
    worker._step()
    worker._step()
    first.step_fails = True
    worker._add(1, [2], {"max_new_tokens": 9}, [], False)  # blamed for the failure; request 0 continues
    worker._step()
    worker._step()  # on the rebuilt pipeline
    assert [t[1] is None for batch in timings(conn) for t in batch] == [True, False, True]


def test_a_step_that_only_frees_a_stopped_request_is_not_timed(monkeypatch) -> None:
    monkeypatch.setattr(gw.time, "monotonic", lambda: 100.0)
    clock, conn = Clock(), Connection()
    worker = gw.Worker(TimedPipeline(clock), conn, clock=clock)
    worker._add(0, [1], {"max_new_tokens": 9}, ["x"], False)  # the fake's text "x" is the stop string
    worker._step()
    assert not worker._active  # stopped: the pipeline frees it at its next step
    worker._step()
    worker._send([], force=True)
    assert [len(batch) for batch in timings(conn)] == [1, 0]


def test_a_step_reports_how_long_the_requests_it_took_in_waited_for_the_engine() -> None:
    clock, conn = Clock(), Connection()
    worker = gw.Worker(TimedPipeline(clock), conn, clock=clock)
    sent = clock.now
    clock.now += 0.040  # the server handed request 0 over while a step ran
    worker._handle(("add", 0, [1], {"max_new_tokens": 9}, [], False, sent))
    worker._handle(("add", 1, [1], {"max_new_tokens": 9}, [], False, clock.now))  # taken in at once
    worker._step()
    worker._step()
    (first,), (second,) = timings(conn)
    assert first[2] == (pytest.approx(0.040), pytest.approx(0.0)) and second[2] == ()


def test_a_wait_that_the_clocks_put_below_zero_counts_as_zero() -> None:
    clock, conn = Clock(), Connection()
    worker = gw.Worker(TimedPipeline(clock), conn, clock=clock)
    worker._handle(("add", 0, [1], {"max_new_tokens": 9}, [], False, clock.now + 1.0))
    worker._step()
    assert timings(conn)[0][0][2] == (0.0,)


def test_waits_go_with_the_step_after_their_add_only() -> None:
    """A request cancelled before any step ran, and one whose first step failed, report no wait later,
    with some other step."""
    clock, conn = Clock(), Connection()
    first, second = TimedPipeline(clock), TimedPipeline(clock)
    worker = gw.Worker(first, conn, rebuild=lambda: second, clock=clock)
    worker._handle(("add", 0, [1], {"max_new_tokens": 9}, [], False, clock.now - 0.5))
    worker._handle(("cancel", 0))  # the client hung up before the engine took its request in
    worker._step()  # frees request 0: not a serving step
    worker._handle(("add", 1, [1], {"max_new_tokens": 9}, [], False, clock.now - 0.25))
    worker._step()
    first.step_fails = True
    worker._handle(("add", 2, [1], {"max_new_tokens": 9}, [], False, clock.now - 0.125))  # blamed, failed
    worker._step()
    worker._step()  # request 1 goes on in the rebuilt pipeline
    assert [t[2] for batch in timings(conn) for t in batch] == [(pytest.approx(0.25),), ()]
