"""OpenAI chat/completions and completions on top of the generation engine.

plan_*() turns a validated request body into token ids and one GenerationConfig per choice
(raising BadRequest with `param` for what the schema cannot check); run_unary() and run_stream()
produce OpenAI-shaped response bodies and stream chunks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, AsyncIterator

import structlog

from server.errors import BadRequest, EngineFailure, ModelNotReady, ServerError, Unsupported
from server.pipelines.generation import EngineUnavailable, GenerationModel, Reservation, TokenUpdate
from server.pipelines.sampling import build_config
from server.services.structured_output import check_json_schema
from server.settings import Limits

log = structlog.get_logger("server.generation")

JSON_OBJECT = json.dumps({"type": "object"})  # json_object's schema: always compiles


@dataclass
class GenerationPlan:
    kind: str  # "chat" | "completion"
    model_id: str
    prompt_ids: list[int]
    prompt_text: str
    configs: list[dict]  # sampling parameters of each choice
    stop: list[str] = field(default_factory=list)
    include_stop: bool = False
    logprobs: int | None = None  # None: not requested; else how many top entries per token (0 or 1)
    echo: bool = False
    include_usage: bool = False
    response_id: str = ""
    created: int = 0

    @property
    def object_name(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    @property
    def chunk_object_name(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"


# ----------------------------------------------------------------------------- planning


def _message_text(content: str | list[dict]) -> str:
    return content if isinstance(content, str) else "\n".join(part["text"] for part in content)


def chat_prompt(model: GenerationModel, body: dict) -> str:
    messages = [
        {"role": "system" if m["role"] == "developer" else m["role"], "content": _message_text(m["content"])}
        for m in body["messages"]
    ]
    try:
        return model.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, extra_context=body.get("chat_template_kwargs") or {}
        )
    except Exception as exc:
        log.info("chat_template_rejected", error=str(exc)[:500])
        raise BadRequest(
            "The model's chat template could not format these messages "
            "(for example: roles that must alternate, or a role the model does not support)",
            param="messages",
        ) from None


def _token_ids(model: GenerationModel, text: str, *, add_special_tokens: bool) -> list[int]:
    encoded = model.tokenizer.encode(text, add_special_tokens=add_special_tokens)
    return encoded.input_ids.data[0].tolist()


def _max_new_tokens(model: GenerationModel, body: dict, prompt_tokens: int, prompt_param: str) -> int:
    settings = model.settings
    context = model.context_length
    if prompt_tokens >= context:
        raise BadRequest(
            f"This model's maximum context length is {context} tokens, and the prompt has {prompt_tokens} tokens",
            param=prompt_param, code="context_length_exceeded",
        )
    param = "max_completion_tokens" if body.get("max_completion_tokens") is not None else "max_tokens"
    requested = body.get(param)
    if requested is None:
        return min(settings.max_tokens_default, context - prompt_tokens)
    if requested > settings.max_tokens_limit:
        raise BadRequest(f"'{param}' is {requested}; this model allows at most {settings.max_tokens_limit}",
                         param=param)
    if prompt_tokens + requested > context:
        raise BadRequest(
            f"This model's maximum context length is {context} tokens; the prompt has {prompt_tokens} tokens and "
            f"'{param}' asks for {requested} more", param=param, code="context_length_exceeded",
        )
    return requested


def _json_schema(body: dict, limits: Limits) -> str | None:
    """The JSON schema that structured output must follow (checked: the engine cannot survive a schema
    it fails to compile), or None for free text."""
    response_format = body.get("response_format") or {"type": "text"}
    kind = response_format["type"]
    if kind == "text":
        return None
    if kind == "json_object":
        return JSON_OBJECT
    spec = response_format.get("json_schema")
    if not spec or "schema" not in spec:
        raise BadRequest("response_format of type json_schema needs json_schema.schema",
                         param="response_format.json_schema")
    return check_json_schema(spec["schema"], limits)


def _sampling_params(model: GenerationModel, body: dict, max_new_tokens: int, choice: int, logprobs: bool,
                     json_schema: str | None) -> dict:
    """GenerationConfig fields for one choice (see server/pipelines/sampling.py)."""
    params: dict = {"eos_token_id": model.eos_token_id, "stop_token_ids": list(model.stop_token_ids),
                    "max_new_tokens": max_new_tokens}
    temperature = body.get("temperature")
    nucleus = any(body.get(name) not in (None, 0, -1) for name in ("top_p", "top_k", "min_p"))
    if temperature is None and nucleus:
        temperature = 1.0  # OpenAI's default temperature: top_p & co. ask for sampling
    if temperature:  # absent (without sampling filters) or 0: greedy
        params.update(do_sample=True, temperature=temperature)
        if body.get("top_p") is not None:
            params["top_p"] = body["top_p"]
        if body.get("top_k") not in (None, 0, -1):
            params["top_k"] = body["top_k"]
        if body.get("min_p") is not None:
            params["min_p"] = body["min_p"]
    if body.get("seed") is not None:
        params["rng_seed"] = body["seed"] + choice  # n choices differ, and repeat with the same seed
    for name in ("presence_penalty", "frequency_penalty", "repetition_penalty"):
        if body.get(name) is not None:
            params[name] = body[name]
    if body.get("ignore_eos"):
        params["ignore_eos"] = True
    if logprobs:
        params["logprobs"] = 1
    if json_schema is not None:
        params["json_schema"] = json_schema
    return params


def _stops(body: dict, limits: Limits) -> list[str]:
    stop = body.get("stop")
    stops = [stop] if isinstance(stop, str) else list(stop or [])
    for stop in stops:
        if len(stop) > limits.max_stop_chars:
            raise BadRequest(f"A stop string has {len(stop)} characters; at most {limits.max_stop_chars} are allowed",
                             param="stop", code="stop_too_long")
    return stops


def _check_stream_options(body: dict) -> None:
    if body.get("stream_options") is not None and not body.get("stream"):
        raise BadRequest("'stream_options' is only allowed when 'stream' is true", param="stream_options")


def plan_chat(model_id: str, model: GenerationModel, body: dict, limits: Limits) -> GenerationPlan:
    _check_stream_options(body)
    top = body.get("top_logprobs")
    if top is not None and not body.get("logprobs"):
        raise BadRequest("'top_logprobs' needs 'logprobs' set to true", param="top_logprobs")
    if top is not None and top > 1:
        raise Unsupported("'top_logprobs' above 1 is not supported: OpenVINO GenAI reports the log-probability "
                          "of the chosen token only", param="top_logprobs")
    prompt = chat_prompt(model, body)
    prompt_ids = _token_ids(model, prompt, add_special_tokens=False)  # the template adds special tokens itself
    logprobs = (top or 0) if body.get("logprobs") else None
    return _plan("chat", model_id, model, body, prompt, prompt_ids, "messages", logprobs, limits)


def plan_completion(model_id: str, model: GenerationModel, body: dict, limits: Limits) -> GenerationPlan:
    _check_stream_options(body)
    logprobs = body.get("logprobs")
    if logprobs is not None and logprobs > 1:
        raise Unsupported("'logprobs' above 1 is not supported: OpenVINO GenAI reports the log-probability "
                          "of the chosen token only", param="logprobs")
    if body.get("echo") and logprobs is not None:
        raise Unsupported("'echo' together with 'logprobs' is not supported (no prompt log-probabilities)",
                          param="echo")
    prompt = body["prompt"]
    if not prompt:
        raise BadRequest("'prompt' must not be empty", param="prompt")
    prompt_ids = _token_ids(model, prompt, add_special_tokens=True)
    return _plan("completion", model_id, model, body, prompt, prompt_ids, "prompt", logprobs, limits)


def _plan(kind: str, model_id: str, model: GenerationModel, body: dict, prompt: str, prompt_ids: list[int],
          prompt_param: str, logprobs: int | None, limits: Limits) -> GenerationPlan:
    """Runs on a worker thread (templating and tokenizing a large prompt take seconds)."""
    stops = _stops(body, limits)
    max_new_tokens = _max_new_tokens(model, body, len(prompt_ids), prompt_param)
    json_schema = _json_schema(body, limits)
    n = body.get("n") or 1
    configs = [_sampling_params(model, body, max_new_tokens, i, logprobs is not None, json_schema) for i in range(n)]
    for params in configs:
        try:
            build_config(params).validate()
        except Exception:
            raise BadRequest("These sampling parameters do not form a valid generation configuration") from None
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return GenerationPlan(
        kind=kind, model_id=model_id, prompt_ids=prompt_ids, prompt_text=prompt, configs=configs,
        stop=stops, include_stop=bool(body.get("include_stop_str_in_output")), logprobs=logprobs,
        echo=bool(body.get("echo")), include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        response_id=f"{prefix}-{uuid.uuid4().hex}", created=int(time.time()),
    )


# ----------------------------------------------------------------------------- running


async def check_structured_output(model: GenerationModel, plan: GenerationPlan) -> None:
    """Compile a new json_schema on the model's probe before the request joins the serving batch."""
    schema = plan.configs[0].get("json_schema")
    if schema is None or schema == JSON_OBJECT or model.grammar_probe is None:
        return
    reason = await model.grammar_probe.check(schema)
    if reason:
        raise BadRequest(f"response_format.json_schema.schema: {reason}", param="response_format.json_schema",
                         code="invalid_json_schema")


def _admit(model: GenerationModel, plan: GenerationPlan) -> Reservation:
    """Reserve all n choices' slots now, before any response starts, or refuse."""
    try:
        return model.engine.admit(len(plan.configs))
    except EngineUnavailable as exc:
        raise _not_ready(plan, exc) from None


async def _choice_updates(model: GenerationModel, plan: GenerationPlan, params: dict,
                          reservation: Reservation) -> AsyncIterator[TokenUpdate]:
    try:
        async for update in model.engine.generate(plan.prompt_ids, params, stop=plan.stop,
                                                  include_stop=plan.include_stop, reservation=reservation):
            yield update
    except EngineUnavailable as exc:
        raise _not_ready(plan, exc) from None


def _not_ready(plan: GenerationPlan, exc: EngineUnavailable) -> ModelNotReady:
    return ModelNotReady(f"Model '{plan.model_id}' cannot generate now: {exc}")


async def _merged(model: GenerationModel, plan: GenerationPlan,
                  reservation: Reservation) -> AsyncIterator[tuple[int, TokenUpdate]]:
    """Updates of all n choices as they come; leaving early cancels every choice."""
    if len(plan.configs) == 1:
        async for update in _choice_updates(model, plan, plan.configs[0], reservation):
            yield 0, update
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int, params: dict) -> None:
        try:
            async for update in _choice_updates(model, plan, params, reservation):
                await queue.put((index, update))
        except ServerError as exc:  # refused (queue full, worker gone): the whole request fails with it
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i, c)) for i, c in enumerate(plan.configs)]
    try:
        remaining = len(tasks)
        while remaining:
            index, update = await queue.get()
            if isinstance(update, ServerError):
                raise update
            if update.finish_reason or update.error:
                remaining -= 1
            yield index, update
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


class _Choice:
    def __init__(self) -> None:
        self.text: list[str] = []
        self.token_ids: list[int] = []
        self.logprobs: list[float] = []
        self.finish_reason: str | None = None


def _chat_logprobs(model: GenerationModel, token_ids: list[int], logprobs: list[float], top: int) -> dict:
    content = []
    for token_id, logprob in zip(token_ids, logprobs):
        token = model.tokenizer.decode([token_id])
        entry = {"token": token, "logprob": logprob, "bytes": list(token.encode())}
        entry["top_logprobs"] = [dict(entry)] if top else []
        content.append(entry)
    return {"content": content}


def _completion_logprobs(model: GenerationModel, token_ids: list[int], logprobs: list[float], top: int,
                         offset: int) -> dict:
    tokens = [model.tokenizer.decode([t]) for t in token_ids]
    offsets = []
    for token in tokens:
        offsets.append(offset)
        offset += len(token)
    return {
        "tokens": tokens,
        "token_logprobs": list(logprobs),
        "top_logprobs": [{t: lp} for t, lp in zip(tokens, logprobs)] if top else None,
        "text_offset": offsets,
    }


def _usage(plan: GenerationPlan, completion_tokens: int) -> dict:
    prompt_tokens = len(plan.prompt_ids)
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens}


def _raise_engine_error(plan: GenerationPlan, error: str) -> None:
    log.error("generation_failed", model=plan.model_id, response_id=plan.response_id, error=error)
    raise EngineFailure(f"Generation failed: {error}. The error was logged")


async def run_unary(model: GenerationModel, plan: GenerationPlan) -> dict:
    reservation = _admit(model, plan)
    try:
        choices = await _collect(model, plan, reservation)
    finally:
        reservation.release()
    if plan.logprobs is None:
        return _unary_body(model, plan, choices)
    # one decode per token: off the loop, on the model's own preparation thread
    return await asyncio.get_running_loop().run_in_executor(model.preparation, _unary_body, model, plan, choices)


async def _collect(model: GenerationModel, plan: GenerationPlan, reservation: Reservation) -> list["_Choice"]:
    choices = [_Choice() for _ in plan.configs]
    async with contextlib.aclosing(_merged(model, plan, reservation)) as updates:  # cancelled: closed at once
        async for index, update in updates:
            _apply(plan, choices, index, update)
    return choices


def _apply(plan: GenerationPlan, choices: list["_Choice"], index: int, update: TokenUpdate) -> None:
    if update.error:
        _raise_engine_error(plan, update.error)
    choice = choices[index]
    choice.text.append(update.text)
    choice.token_ids.extend(update.token_ids)
    choice.logprobs.extend(update.logprobs)
    if update.finish_reason:
        choice.finish_reason = update.finish_reason


def _unary_body(model: GenerationModel, plan: GenerationPlan, choices: list[_Choice]) -> dict:
    body_choices = []
    for index, choice in enumerate(choices):
        text = "".join(choice.text)
        if plan.kind == "chat":
            entry = {"index": index, "message": {"role": "assistant", "content": text}, "logprobs": None,
                     "finish_reason": choice.finish_reason}
            if plan.logprobs is not None:
                entry["logprobs"] = _chat_logprobs(model, choice.token_ids, choice.logprobs, plan.logprobs)
        else:
            prefix = plan.prompt_text if plan.echo else ""
            entry = {"index": index, "text": prefix + text, "logprobs": None, "finish_reason": choice.finish_reason}
            if plan.logprobs is not None:
                entry["logprobs"] = _completion_logprobs(model, choice.token_ids, choice.logprobs, plan.logprobs,
                                                         len(prefix))
        body_choices.append(entry)
    return {
        "id": plan.response_id, "object": plan.object_name, "created": plan.created, "model": plan.model_id,
        "choices": body_choices, "usage": _usage(plan, sum(len(c.token_ids) for c in choices)),
    }


def _chunk(plan: GenerationPlan, choices: list[dict], usage: dict | None = None) -> dict:
    chunk = {"id": plan.response_id, "object": plan.chunk_object_name, "created": plan.created,
             "model": plan.model_id, "choices": choices}
    if plan.include_usage:
        chunk["usage"] = usage
    return chunk


def _delta_choice(model: GenerationModel, plan: GenerationPlan, index: int, update: TokenUpdate, offset: int) -> dict:
    if plan.kind == "chat":
        choice = {"index": index, "delta": {"content": update.text} if update.text else {}, "logprobs": None,
                  "finish_reason": update.finish_reason}
        if plan.logprobs is not None and update.token_ids:
            choice["logprobs"] = _chat_logprobs(model, update.token_ids, update.logprobs, plan.logprobs)
    else:
        choice = {"index": index, "text": update.text, "logprobs": None, "finish_reason": update.finish_reason}
        if plan.logprobs is not None and update.token_ids:
            choice["logprobs"] = _completion_logprobs(model, update.token_ids, update.logprobs, plan.logprobs, offset)
    return choice


async def run_stream(model: GenerationModel, plan: GenerationPlan) -> AsyncIterator[dict]:
    """Chunks in OpenAI's order: role (chat) or echo (completions) first, deltas, finish, then usage."""
    reservation = _admit(model, plan)  # before the first chunk: a refusal still gets its status code
    try:
        async with contextlib.aclosing(_stream_chunks(model, plan, reservation)) as chunks:  # closing cancels
            async for chunk in chunks:
                yield chunk
    finally:
        reservation.release()


async def _stream_chunks(model: GenerationModel, plan: GenerationPlan, reservation: Reservation) -> AsyncIterator[dict]:
    for index in range(len(plan.configs)):
        if plan.kind == "chat":
            yield _chunk(plan, [{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None,
                                 "finish_reason": None}])
        elif plan.echo:
            yield _chunk(plan, [{"index": index, "text": plan.prompt_text, "logprobs": None, "finish_reason": None}])
    completion_tokens = 0
    offsets = [len(plan.prompt_text) if plan.echo else 0] * len(plan.configs)
    async for index, update in _merged(model, plan, reservation):
        if update.error:
            _raise_engine_error(plan, update.error)
        completion_tokens += len(update.token_ids)
        finish = update.finish_reason
        if update.text or (plan.logprobs is not None and update.token_ids):
            content = TokenUpdate(text=update.text, token_ids=update.token_ids, logprobs=update.logprobs)
            yield _chunk(plan, [_delta_choice(model, plan, index, content, offsets[index])])
            offsets[index] += len(update.text)
        if finish:  # OpenAI ends each choice with a chunk of its own: empty delta + finish_reason
            yield _chunk(plan, [_delta_choice(model, plan, index, TokenUpdate(finish_reason=finish), offsets[index])])
    if plan.include_usage:
        yield _chunk(plan, [], _usage(plan, completion_tokens))
