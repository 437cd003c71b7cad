"""The schema probe on the real tiny-chat model: a schema the engine cannot compile is found on a worker
of its own (the static check is bypassed here on purpose), a good one passes, verdicts are cached,
and a compile that outlasts its timeout is refused and leaves a fresh probe for the next schema."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from server.errors import ModelNotReady
from server.pipelines import generation
from server.pipelines.grammar_probe import GrammarProbe
from server.pipelines.loader import with_server_defaults
from server.repository import config as model_config
from server.settings import model_defaults


def probe_for(models: Path, **settings: object) -> GrammarProbe:
    config = model_config.build({"task": "text_generation", "text_generation": settings})
    spec = with_server_defaults(config.pipeline, model_defaults())  # max_queued_requests 64, stall_timeout_s 120
    return GrammarProbe(models / "tiny-chat" / "1", spec, "tiny-chat", "1", eos_token_id=2)


def test_probe_finds_bad_schemas_and_caches_verdicts(models: Path) -> None:
    probe = probe_for(models)

    async def scenario() -> None:
        bad = await probe.check(json.dumps({"type": "nonsense"}))
        assert bad and "cannot compile" in bad and "RuntimeError" not in bad
        good = json.dumps({"type": "object", "properties": {"answer": {"type": "string"}}})
        assert await probe.check(good) is None
        engine = probe._engine
        assert await probe.check(good) is None and probe._engine is engine  # cached: no new compile
        assert await probe.check(json.dumps({"type": "integer"})) is None  # the probe survived the bad one

    try:
        asyncio.run(scenario())
    finally:
        probe.close()


def test_a_compile_past_the_timeout_is_refused_and_the_probe_replaced(models: Path) -> None:
    probe = probe_for(models, schema_compile_timeout_s=0.001)

    async def scenario() -> None:
        reason = await probe.check(json.dumps({"type": "object"}) + " ")
        assert reason and "did not compile within" in reason
        assert probe._engine is None  # the stuck one is closed; the next schema gets a fresh probe

    try:
        asyncio.run(scenario())
    finally:
        probe.close()


async def until(predicate, what: str) -> None:
    """Poll state on the event loop (each step yields to the task under test); a bound, not a sleep."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 60
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


def test_a_check_cancelled_while_the_probe_starts_leaves_one_probe_for_the_next(models: Path, monkeypatch) -> None:
    """A client that hangs up (or times out) during the probe's first start must not orphan the worker
    being started: it stays the probe, and close() stops it."""
    built: list = []

    class CountedEngine(generation.GenerationEngine):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            built.append(self)

    monkeypatch.setattr(generation, "GenerationEngine", CountedEngine)
    probe = probe_for(models)

    async def scenario() -> None:
        first = asyncio.ensure_future(probe.check(json.dumps({"type": "integer"})))
        await until(lambda: probe._starting is not None, "the probe's start")
        first.cancel()
        with pytest.raises(asyncio.CancelledError):
            await first
        assert await probe.check(json.dumps({"type": "string"})) is None
        assert len(built) == 1 and probe._engine is built[0]

    try:
        asyncio.run(scenario())
    finally:
        probe.close()
    assert built and all(engine._process.poll() is not None for engine in built)


def test_a_probe_that_cannot_start_is_a_503_and_is_not_retried_at_once(models: Path, monkeypatch) -> None:
    starts: list = []

    def failing(*args, **kwargs):
        starts.append(args)
        raise RuntimeError("the generation worker exited while loading the model")

    monkeypatch.setattr(generation, "GenerationEngine", failing)
    probe = probe_for(models)

    async def scenario() -> None:
        for schema in ({"type": "integer"}, {"type": "string"}):
            with pytest.raises(ModelNotReady) as refused:
                await probe.check(json.dumps(schema))
            assert "schema probe" in refused.value.message and "RuntimeError" not in refused.value.message
        assert len(starts) == 1  # the second request did not start another model copy

    asyncio.run(scenario())
