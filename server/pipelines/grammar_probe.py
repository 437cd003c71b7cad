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
import threading
import time
from collections import OrderedDict
from pathlib import Path

import structlog

from server.errors import ModelNotReady
from server.pipelines.settings import PipelineSpec

log = structlog.get_logger("server.generation")

CACHED_VERDICTS = 256
START_RETRY_S = 30.0  # after a probe failed to start, schema requests get 503 this long before another try


class GrammarProbe:
    def __init__(self, path: Path, spec: PipelineSpec, model_id: str, version: str, eos_token_id: int) -> None:
        settings = dataclasses.replace(spec.settings, max_num_seqs=1, enable_prefix_caching=False, prompt_lookup=False,
                                       max_queued_requests=1_000_000, stall_timeout_s=10 * 365 * 24 * 3600.0)  # timing is ours
        self._spec = dataclasses.replace(spec, settings=settings)
        self._path, self._name, self._version = path, f"{model_id}#schema-probe", version
        self._eos = eos_token_id
        self._timeout = float(spec.settings.schema_compile_timeout_s)
        self._engine = None
        # The probe's start runs in a task of its own: a request that is cancelled while waiting for it
        # (a client hanging up, a deadline) must not orphan the worker being started.
        self._starting: asyncio.Future | None = None
        self._start_failed_at: float | None = None  # monotonic time of the last failed start
        self._closed = False
        self._close_lock = threading.Lock()  # close() runs off the loop; the start ends on it
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

        engine = await self._ready_engine(GenerationEngine)
        params = {"max_new_tokens": 1, kind: schema, "eos_token_id": self._eos}
        try:
            async with asyncio.timeout(self._timeout):
                async for update in engine.generate([self._eos], params):
                    if update.error:
                        log.info("schema_probe_rejected", model=self._name, error=update.error)
                        return "the structured-output engine cannot compile this schema"
        except TimeoutError:
            log.warning("schema_probe_timeout", model=self._name, timeout_s=self._timeout)
            self._engine = None  # stuck compiling: a fresh probe for the next schema
            asyncio.get_running_loop().run_in_executor(None, engine.close)
            return f"this schema did not compile within {self._timeout:g} s"
        return None

    async def _ready_engine(self, engine_class: type):
        """The probe's engine, started (once) if there is none or it broke; ModelNotReady (503) if it
        cannot start, without another try for START_RETRY_S (each try starts a copy of the model)."""
        if self._engine is not None and not self._engine.broken:
            return self._engine
        if self._starting is None:
            if self._start_failed_at is not None and time.monotonic() - self._start_failed_at < START_RETRY_S:
                raise self._unavailable()
            self._starting = asyncio.ensure_future(
                asyncio.to_thread(engine_class, self._path, self._spec, self._name, self._version))
            self._starting.add_done_callback(self._started)
        try:
            return await asyncio.shield(self._starting)  # a cancelled caller leaves the start running
        except asyncio.CancelledError:
            raise
        except Exception:
            raise self._unavailable() from None

    def _started(self, starting: asyncio.Future) -> None:
        """On the event loop when a start ends, whether or not a request still waits for it."""
        self._starting = None
        if starting.cancelled():
            return
        error = starting.exception()
        if error is not None:
            self._start_failed_at = time.monotonic()
            log.error("schema_probe_start_failed", model=self._name, error=f"{type(error).__name__}: {error}")
            return
        self._start_failed_at = None
        with self._close_lock:
            if not self._closed:
                self._engine = starting.result()
                return
        asyncio.get_running_loop().run_in_executor(None, starting.result().close)  # the model closed meanwhile

    def _unavailable(self) -> ModelNotReady:
        return ModelNotReady("The structured-output schema probe of this model could not start (see the server "
                             "log); retry later, or turn it off with text_generation.schema_probe false",
                             code="schema_probe_unavailable")

    def close(self) -> None:
        """Off the event loop, with the model. A start still under way closes its engine when it ends."""
        with self._close_lock:
            self._closed = True
            engine, self._engine = self._engine, None
        if engine is not None:
            engine.close()
