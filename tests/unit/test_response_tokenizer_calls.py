"""Building a response never waits for the model's tokenizer on the event loop.

SharedTokenizer serialises every call with a lock, which the model's preparation thread holds while it
templates and tokenizes a prompt. Log-probability tokens (one decode per token) and reasoning-token
counts (an encode) therefore run on that thread too: a request that needs them waits, the loop (every
other stream, health, /metrics) does not. Fakes for the engine and tokenizer: what is measured is where
the call runs. A watchdog opens the tokenizer after WATCHDOG_S, so a regression fails instead of hanging."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import numpy as np
import pytest

from server.pipelines.generation import TokenUpdate
from server.services.generation import run_stream, run_unary
from server.services.generation_plan import GenerationPlan

WATCHDOG_S = 5.0  # a failure bound only: a passing run opens the tokenizer as soon as the loop sees the call


class GatedTokenizer:
    """Every call blocks until the test opens the gate (as the real lock would while a prompt tokenizes)."""

    def __init__(self) -> None:
        self.called = threading.Event()
        self.gate = threading.Event()
        self.loop_thread: int | None = None
        self.threads: set[int] = set()

    def _enter(self) -> None:
        self.threads.add(threading.get_ident())
        self.called.set()
        self.gate.wait(WATCHDOG_S * 4)

    def decode(self, ids: list[int]) -> str:
        self._enter()
        return "t"

    def encode(self, text: str, add_special_tokens: bool = True) -> SimpleNamespace:
        self._enter()
        return SimpleNamespace(input_ids=SimpleNamespace(data=np.array([[1] * len(text)])))


class OneTokenEngine:
    capacity = 80

    def admit(self, sequences: int = 1) -> SimpleNamespace:
        return SimpleNamespace(release=lambda: None)

    async def generate(self, prompt_ids, params, **kwargs):
        yield TokenUpdate(text="<think>a</think>b", token_ids=[7, 8], logprobs=[-0.5, -0.25])
        yield TokenUpdate(finish_reason="stop")


def plan(kind: str, **fields: object) -> GenerationPlan:
    return GenerationPlan(kind=kind, model_id="m", prompts=[("hi", [1, 2])], configs=[{}], **fields)


async def loop_stays_free(tokenizer: GatedTokenizer, work) -> bool:
    """Run `work` while the tokenizer is shut; True if the event loop saw the tokenizer called while it
    was still shut (so the call was not on the loop)."""
    def watchdog() -> None:
        tokenizer.called.wait(WATCHDOG_S * 4)
        if not tokenizer.gate.wait(WATCHDOG_S):
            tokenizer.gate.set()

    threading.Thread(target=watchdog, daemon=True).start()
    task = asyncio.ensure_future(work())
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WATCHDOG_S * 4
    while not tokenizer.called.is_set():
        assert loop.time() < deadline, "the tokenizer was never called"
        await asyncio.sleep(0.005)
    free = not tokenizer.gate.is_set()
    tokenizer.gate.set()
    await asyncio.wait_for(task, WATCHDOG_S * 4)
    return free


async def collect(stream) -> list[dict]:
    return [chunk async for chunk in stream]


@pytest.mark.parametrize("case", ["chat stream logprobs", "completion stream logprobs", "chat unary reasoning",
                                  "chat stream reasoning usage"])
def test_response_tokenizer_calls_leave_the_event_loop_free(case: str) -> None:
    tokenizer = GatedTokenizer()
    preparation = ThreadPoolExecutor(1, thread_name_prefix="prepare-test")
    model = SimpleNamespace(engine=OneTokenEngine(), tokenizer=tokenizer, preparation=preparation)
    if case == "chat stream logprobs":
        subject = plan("chat", logprobs=1)
        work = lambda: collect(run_stream(model, subject))  # noqa: E731
    elif case == "completion stream logprobs":
        subject = plan("completion", logprobs=1)
        work = lambda: collect(run_stream(model, subject))  # noqa: E731
    elif case == "chat unary reasoning":
        subject = plan("chat", reasoning="qwen3")
        work = lambda: run_unary(model, subject)  # noqa: E731
    else:
        subject = plan("chat", reasoning="qwen3", include_usage=True)
        work = lambda: collect(run_stream(model, subject))  # noqa: E731

    async def scenario() -> bool:
        tokenizer.loop_thread = threading.get_ident()
        return await loop_stays_free(tokenizer, work)

    try:
        free = asyncio.run(scenario())
    finally:
        preparation.shutdown(wait=True)
    assert tokenizer.loop_thread not in tokenizer.threads, "a tokenizer call ran on the event loop"
    assert free
