"""The schema probe on the real tiny-chat model: a schema the engine cannot compile is found on a worker
of its own (the static check is bypassed here on purpose), a good one passes, verdicts are cached,
and a compile that outlasts its timeout is refused and leaves a fresh probe for the next schema."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

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
