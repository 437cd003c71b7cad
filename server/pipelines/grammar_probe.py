"""Structured-output schemas are compiled on a probe before their request joins the serving batch.

OpenVINO GenAI compiles a schema into a grammar inside step(), for the whole batch, and a failed step
ruins the pipeline (openvino-genai 2026.4.1). The static check (server/services/structured_output.py)
refuses what was measured to break the compiler; the probe settles the rest for real: a worker process
of its own on the same model (max_num_seqs 1, started on the first schema) generates one token under
the schema. A schema that fails there, or does not compile within `schema_compile_timeout_s`, is a 400
and never reaches the serving worker. Verdicts are cached per schema text.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import OrderedDict
from pathlib import Path

import structlog

from server.pipelines.settings import PipelineSpec

log = structlog.get_logger("server.generation")

CACHED_VERDICTS = 256


class GrammarProbe:
    def __init__(self, path: Path, spec: PipelineSpec, model_id: str, version: str, eos_token_id: int) -> None:
        settings = dataclasses.replace(spec.settings, max_num_seqs=1, enable_prefix_caching=False, prompt_lookup=False,
                                       max_queued_requests=1_000_000, stall_timeout_s=10 * 365 * 24 * 3600.0)  # timing is ours
        self._spec = dataclasses.replace(spec, settings=settings)
        self._path, self._name, self._version = path, f"{model_id}#schema-probe", version
        self._eos = eos_token_id
        self._timeout = float(spec.settings.schema_compile_timeout_s)
        self._engine = None
        self._lock: asyncio.Lock | None = None
        self._verdicts: OrderedDict[str, str | None] = OrderedDict()  # schema -> None (compiles) or why not

    async def check(self, schema: str, kind: str = "json_schema") -> str | None:
        """None when the schema compiles, else a reason that is safe to show. `kind`: the sampling
        params key it goes under (json_schema, or structural_tag for tool calls)."""
        key = f"{kind}:{schema}"
        if key in self._verdicts:
            self._verdicts.move_to_end(key)
            return self._verdicts[key]
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:  # one schema at a time: the probe has one sequence slot
            if key not in self._verdicts:
                self._remember(key, await self._compile(schema, kind))
        return self._verdicts[key]

    def _remember(self, schema: str, verdict: str | None) -> None:
        self._verdicts[schema] = verdict
        while len(self._verdicts) > CACHED_VERDICTS:
            self._verdicts.popitem(last=False)

    async def _compile(self, schema: str, kind: str) -> str | None:
        from server.pipelines.generation import GenerationEngine  # the probe is a generation worker too

        if self._engine is None or self._engine.broken:
            self._engine = await asyncio.to_thread(GenerationEngine, self._path, self._spec, self._name,
                                                   self._version)
        params = {"max_new_tokens": 1, kind: schema, "eos_token_id": self._eos}
        try:
            async with asyncio.timeout(self._timeout):
                async for update in self._engine.generate([self._eos], params):
                    if update.error:
                        log.info("schema_probe_rejected", model=self._name, error=update.error)
                        return "the structured-output engine cannot compile this schema"
        except TimeoutError:
            log.warning("schema_probe_timeout", model=self._name, timeout_s=self._timeout)
            engine, self._engine = self._engine, None  # stuck compiling: a fresh probe for the next schema
            asyncio.get_running_loop().run_in_executor(None, engine.close)
            return f"this schema did not compile within {self._timeout:g} s"
        return None

    def close(self) -> None:
        """Off the event loop, with the model."""
        if self._engine is not None:
            self._engine.close()
            self._engine = None
