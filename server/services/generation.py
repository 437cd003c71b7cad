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
from typing import AsyncIterator

import structlog

from server.errors import BadRequest, EngineFailure, ModelNotReady, ServerError, Unsupported
from server.pipelines.generation import EngineUnavailable, GenerationModel, Reservation, TokenUpdate
from server.pipelines.sampling import build_config
from server.services import reasoning, tool_parsers
from server.services.chat_deltas import ChatDeltas
from server.services import tools as tool_calling
from server.services.structured_output import check_json_schema
from server.settings import Limits

log = structlog.get_logger("server.generation")

JSON_OBJECT = json.dumps({"type": "object"})  # json_object's schema: always compiles


@dataclass
class GenerationPlan:
    kind: str  # "chat" | "completion"
    model_id: str
    prompts: list[tuple[str, list[int]]]  # (text, token ids) of each prompt: completions may have several
    configs: list[dict]  # sampling parameters of each choice: n per prompt, prompt by prompt
    stop: list[str] = field(default_factory=list)
    include_stop: bool = False
    logprobs: int | None = None  # None: not requested; else how many top entries per token (0 or 1)
    echo: bool = False
    include_usage: bool = False
    tools: tool_calling.ToolPlan | None = None  # the answer may hold tool calls, read with tools.parser
    reasoning: str | None = None  # reasoning parser: thinking goes to reasoning_content
    starts_in_reasoning: bool = False  # the prompt opened the thinking block itself
    response_id: str = ""
    created: int = 0

    @property
    def prompt_text(self) -> str:
        return self.prompts[0][0]

    @property
    def prompt_tokens(self) -> int:
        return sum(len(ids) for _, ids in self.prompts)

    def prompt_of(self, choice: int) -> tuple[str, list[int]]:
        return self.prompts[choice * len(self.prompts) // len(self.configs)]

    @property
    def object_name(self) -> str:
        return "chat.completion" if self.kind == "chat" else "text_completion"

    @property
    def chunk_object_name(self) -> str:
        return "chat.completion.chunk" if self.kind == "chat" else "text_completion"


# ----------------------------------------------------------------------------- planning


# Fields frameworks send that change nothing here: accepted, and logged once per request.
_IGNORED_FIELDS = ("metadata", "service_tier", "store", "prompt_cache_key", "safety_identifier")


def _log_ignored(body: dict, model: GenerationModel) -> None:
    ignored = [name for name in _IGNORED_FIELDS if body.get(name) is not None]
    if not body.get("tools"):
        ignored += [name for name in ("parallel_tool_calls", "tool_choice") if body.get(name) is not None]
    if body.get("reasoning_effort") is not None and not model.settings.reasoning_parser:
        ignored.append("reasoning_effort")
    if ignored:
        log.info("ignored_fields", fields=ignored)


def chat_prompt(model: GenerationModel, body: dict, tool_plan: tool_calling.ToolPlan | None = None) -> str:
    messages = tool_calling.template_messages(body["messages"])
    extra = dict(body.get("chat_template_kwargs") or {})
    if body.get("reasoning_effort") is not None:
        extra.setdefault("reasoning_effort", body["reasoning_effort"])
    try:
        return model.tokenizer.apply_chat_template(
            messages, add_generation_prompt=True, tools=tool_plan.tools if tool_plan else None, extra_context=extra
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
    _log_ignored(body, model)
    tool_plan = tool_calling.plan_tools(body, chat_template=model.tokenizer.chat_template or "",
                                        configured_parser=model.settings.tool_parser, limits=limits)
    call_grammar = None
    if tool_plan is not None and tool_plan.grammar is not None:
        if (body.get("response_format") or {}).get("type", "text") != "text":
            raise BadRequest("'response_format' cannot be combined with tool_choice 'required' or a named function",
                             param="tool_choice")
        call_grammar = json.dumps(tool_plan.grammar)
    prompt = chat_prompt(model, body, tool_plan)
    prompt_ids = _token_ids(model, prompt, add_special_tokens=False)  # the template adds special tokens itself
    logprobs = (top or 0) if body.get("logprobs") else None
    plan = _plan("chat", model_id, model, body, [(prompt, prompt_ids)], "messages", logprobs, limits, call_grammar)
    plan.tools = tool_plan
    plan.reasoning = model.settings.reasoning_parser
    plan.starts_in_reasoning = bool(plan.reasoning) and reasoning.opens_in_prompt(prompt)
    return plan


def plan_completion(model_id: str, model: GenerationModel, body: dict, limits: Limits) -> GenerationPlan:
    _check_stream_options(body)
    logprobs = body.get("logprobs")
    if logprobs is not None and logprobs > 1:
        raise Unsupported("'logprobs' above 1 is not supported: OpenVINO GenAI reports the log-probability "
                          "of the chosen token only", param="logprobs")
    if body.get("echo") and logprobs is not None:
        raise Unsupported("'echo' together with 'logprobs' is not supported (no prompt log-probabilities)",
                          param="echo")
    return _plan("completion", model_id, model, body, _completion_prompts(model, body["prompt"]), "prompt", logprobs,
                 limits)


def _completion_prompts(model: GenerationModel, prompt: str | list) -> list[tuple[str, list[int]]]:
    """OpenAI's prompt forms: a string, strings, token ids, lists of token ids; (text, ids) of each."""
    if isinstance(prompt, str) or (prompt and isinstance(prompt[0], str)):
        texts = [prompt] if isinstance(prompt, str) else prompt
        for index, text in enumerate(texts):
            if not text:
                raise BadRequest("'prompt' must not be empty" if isinstance(prompt, str) else
                                 f"Prompt {index} is empty", param="prompt")
        return [(text, _token_ids(model, text, add_special_tokens=True)) for text in texts]
    id_lists = [prompt] if isinstance(prompt[0], int) else prompt
    for index, ids in enumerate(id_lists):
        if model.vocab_size is not None and max(ids) >= model.vocab_size:
            raise BadRequest(f"Prompt {index} has token id {max(ids)}, beyond this model's vocabulary of "
                             f"{model.vocab_size}", param="prompt")
    return [(model.tokenizer.decode(ids), list(ids)) for ids in id_lists]


def _plan(kind: str, model_id: str, model: GenerationModel, body: dict, prompts: list[tuple[str, list[int]]],
          prompt_param: str, logprobs: int | None, limits: Limits, call_grammar: str | None = None) -> GenerationPlan:
    """Runs on a worker thread (templating and tokenizing a large prompt take seconds). `call_grammar`:
    the structural tag required / named tool calls are generated under, instead of response_format."""
    stops = _stops(body, limits)
    max_new_tokens = _max_new_tokens(model, body, max(len(ids) for _, ids in prompts), prompt_param)
    json_schema = None if call_grammar is not None else _json_schema(body, limits)
    n = body.get("n") or 1
    configs = [_sampling_params(model, body, max_new_tokens, i, logprobs is not None, json_schema)
               for _ in prompts for i in range(n)]
    if call_grammar is not None:
        for params in configs:
            params["structural_tag"] = call_grammar
    for params in configs:
        try:
            build_config(params).validate()
        except Exception:
            raise BadRequest("These sampling parameters do not form a valid generation configuration") from None
    prefix = "chatcmpl" if kind == "chat" else "cmpl"
    return GenerationPlan(
        kind=kind, model_id=model_id, prompts=prompts, configs=configs,
        stop=stops, include_stop=bool(body.get("include_stop_str_in_output")), logprobs=logprobs,
        echo=bool(body.get("echo")), include_usage=bool((body.get("stream_options") or {}).get("include_usage")),
        response_id=f"{prefix}-{uuid.uuid4().hex}", created=int(time.time()),
    )


# ----------------------------------------------------------------------------- running


async def check_structured_output(model: GenerationModel, plan: GenerationPlan) -> None:
    """Compile a new json_schema (or tool-call grammar) on the model's probe before the request joins
    the serving batch."""
    if model.grammar_probe is None:
        return
    tag = plan.configs[0].get("structural_tag")
    if tag is not None:
        reason = await model.grammar_probe.check(tag, "structural_tag")
        if reason:
            raise BadRequest(f"The tools' parameter schemas cannot be generated under: {reason}", param="tools",
                             code="invalid_tool_schema")
        return
    schema = plan.configs[0].get("json_schema")
    if schema is None or schema == JSON_OBJECT:
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


async def _choice_updates(model: GenerationModel, plan: GenerationPlan, choice: int,
                          reservation: Reservation) -> AsyncIterator[TokenUpdate]:
    params = plan.configs[choice]
    try:
        async for update in model.engine.generate(plan.prompt_of(choice)[1], params, stop=plan.stop,
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
        async for update in _choice_updates(model, plan, 0, reservation):
            yield 0, update
        return
    queue: asyncio.Queue = asyncio.Queue()

    async def pump(index: int) -> None:
        try:
            async for update in _choice_updates(model, plan, index, reservation):
                await queue.put((index, update))
        except ServerError as exc:  # refused (queue full, worker gone): the whole request fails with it
            await queue.put((index, exc))

    tasks = [asyncio.create_task(pump(i)) for i in range(len(plan.configs))]
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
    return {"content": content, "refusal": None}


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


def _usage(plan: GenerationPlan, completion_tokens: int, reasoning_tokens: int | None = None) -> dict:
    prompt_tokens = plan.prompt_tokens
    usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
             "total_tokens": prompt_tokens + completion_tokens}
    if reasoning_tokens is not None:
        usage["completion_tokens_details"] = {"reasoning_tokens": reasoning_tokens}
    return usage


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
            message, finish = _chat_message(plan, text, choice.finish_reason)
            entry = {"index": index, "message": message, "logprobs": None, "finish_reason": finish}
            if plan.logprobs is not None:
                entry["logprobs"] = _chat_logprobs(model, choice.token_ids, choice.logprobs, plan.logprobs)
        else:
            prefix = plan.prompt_of(index)[0] if plan.echo else ""
            entry = {"index": index, "text": prefix + text, "logprobs": None, "finish_reason": choice.finish_reason}
            if plan.logprobs is not None:
                entry["logprobs"] = _completion_logprobs(model, choice.token_ids, choice.logprobs, plan.logprobs,
                                                         len(prefix))
        body_choices.append(entry)
    reasoning_tokens = None
    if plan.reasoning:
        reasoning_tokens = sum(_count_tokens(model, entry["message"].get("reasoning_content") or "")
                               for entry in body_choices)
    return {
        "id": plan.response_id, "object": plan.object_name, "created": plan.created, "model": plan.model_id,
        "choices": body_choices, "usage": _usage(plan, sum(len(c.token_ids) for c in choices), reasoning_tokens),
    }


def _count_tokens(model: GenerationModel, text: str) -> int:
    return len(_token_ids(model, text, add_special_tokens=False)) if text else 0


def _chat_message(plan: GenerationPlan, text: str, finish: str | None) -> tuple[dict, str | None]:
    """The assistant message of one choice: thinking split off, tool calls read out of the text."""
    message: dict = {"role": "assistant", "content": text, "refusal": None}
    if plan.reasoning:
        thinking, text = reasoning.split(text, starts_inside=plan.starts_in_reasoning)
        message["content"] = text
        message["reasoning_content"] = thinking or None
    if plan.tools is not None:
        parsed = tool_parsers.parse(plan.tools.parser, text)
        if parsed.calls:
            message["content"] = parsed.content or None
            message["tool_calls"] = tool_calling.message_calls(parsed.calls)
            if finish == "stop":
                finish = "tool_calls"
    return message, finish


def _chunk(plan: GenerationPlan, choices: list[dict], usage: dict | None = None) -> dict:
    chunk = {"id": plan.response_id, "object": plan.chunk_object_name, "created": plan.created,
             "model": plan.model_id, "choices": choices}
    if plan.include_usage:
        chunk["usage"] = usage
    return chunk


def _delta_choice(model: GenerationModel, plan: GenerationPlan, index: int, update: TokenUpdate, offset: int) -> dict:
    """A completions stream choice (chat choices: _chat_choices)."""
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
            yield _chunk(plan, [{"index": index, "text": plan.prompt_of(index)[0], "logprobs": None,
                                 "finish_reason": None}])
    if plan.kind == "chat":
        chats = [ChatDeltas(tool_parser=plan.tools.parser if plan.tools else None, reasoning_parser=plan.reasoning,
                            starts_in_reasoning=plan.starts_in_reasoning) for _ in plan.configs]
    completion_tokens = 0
    offsets = [len(plan.prompt_of(index)[0]) if plan.echo else 0 for index in range(len(plan.configs))]
    async for index, update in _merged(model, plan, reservation):
        if update.error:
            _raise_engine_error(plan, update.error)
        completion_tokens += len(update.token_ids)
        finish = update.finish_reason
        if plan.kind == "chat":
            for choice in _chat_choices(model, plan, index, update, chats[index]):
                yield _chunk(plan, [choice])
            continue
        if update.text or (plan.logprobs is not None and update.token_ids):
            content = TokenUpdate(text=update.text, token_ids=update.token_ids, logprobs=update.logprobs)
            yield _chunk(plan, [_delta_choice(model, plan, index, content, offsets[index])])
            offsets[index] += len(update.text)
        if finish:  # OpenAI ends each choice with a chunk of its own: empty delta + finish_reason
            yield _chunk(plan, [_delta_choice(model, plan, index, TokenUpdate(finish_reason=finish), offsets[index])])
    if plan.include_usage:
        reasoning_tokens = None
        if plan.kind == "chat" and plan.reasoning:
            reasoning_tokens = sum(_count_tokens(model, "".join(chat.reasoning_text)) for chat in chats)
        yield _chunk(plan, [], _usage(plan, completion_tokens, reasoning_tokens))


def _chat_choices(model: GenerationModel, plan: GenerationPlan, index: int, update: TokenUpdate,
                  chat: ChatDeltas) -> list[dict]:
    """The chunk choices one update of a chat choice makes: its deltas (log-probabilities on the first),
    then, when it ends, an empty delta with the finish reason."""
    deltas = chat.feed(update.text) if update.text else []
    if update.finish_reason:
        deltas += chat.finish()
    wants_logprobs = plan.logprobs is not None and update.token_ids
    if wants_logprobs and not deltas:
        deltas = [{}]
    choices = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None} for delta in deltas]
    if wants_logprobs:
        choices[0]["logprobs"] = _chat_logprobs(model, update.token_ids, update.logprobs, plan.logprobs)
    if update.finish_reason:
        choices.append({"index": index, "delta": {}, "logprobs": None,
                        "finish_reason": chat.finish_reason(update.finish_reason)})
    return choices
