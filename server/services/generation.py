"""Running a GenerationPlan on the generation engine: OpenAI-shaped response bodies (run_unary) and
stream chunks (run_stream). Planning is in generation_plan.py.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import AsyncIterator

import structlog

from server.errors import BadRequest, EngineFailure, ModelNotReady, ServerError
from server.pipelines.generation import EngineUnavailable, GenerationModel, Reservation, TokenUpdate
from server.services import reasoning, tool_parsers
from server.services import tools as tool_calling
from server.services.chat_deltas import ChatDeltas
from server.services.generation_plan import JSON_OBJECT, GenerationPlan, token_ids

log = structlog.get_logger("server.generation")


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
    sequences, capacity = len(plan.configs), model.engine.capacity
    if sequences > capacity:  # would never fit: retrying cannot help, so a 400, not a 429
        param = "prompt" if len(plan.configs) == len(plan.prompts) else "n"  # n = 1: the prompts are too many
        raise BadRequest(f"This request needs {sequences} sequences (prompts x n); this model runs and queues at "
                         f"most {capacity}: send fewer prompts or a smaller n", param=param)
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


def _token_texts(model: GenerationModel, token_ids: list[int]) -> list[str]:
    """Each token's own text. Calls the shared tokenizer: run it on the model's preparation thread
    (_off_loop), never on the event loop, where its lock may be held by a prompt being tokenized."""
    return [model.tokenizer.decode([t]) for t in token_ids]


async def _off_loop(model: GenerationModel, function, *args):
    return await asyncio.get_running_loop().run_in_executor(model.preparation, function, *args)


def _chat_logprobs(tokens: list[str], logprobs: list[float], top: int) -> dict:
    content = []
    for token, logprob in zip(tokens, logprobs):
        entry = {"token": token, "logprob": logprob, "bytes": list(token.encode())}
        entry["top_logprobs"] = [dict(entry)] if top else []
        content.append(entry)
    return {"content": content, "refusal": None}


def _completion_logprobs(tokens: list[str], logprobs: list[float], top: int, offset: int) -> dict:
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
    if plan.logprobs is None and not plan.reasoning:
        return _unary_body(model, plan, choices)
    # a decode per token, or a reasoning token count: the tokenizer, so off the loop
    return await _off_loop(model, _unary_body, model, plan, choices)


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
                entry["logprobs"] = _chat_logprobs(_token_texts(model, choice.token_ids), choice.logprobs,
                                                   plan.logprobs)
        else:
            prefix = plan.prompt_of(index)[0] if plan.echo else ""
            entry = {"index": index, "text": prefix + text, "logprobs": None, "finish_reason": choice.finish_reason}
            if plan.logprobs is not None:
                entry["logprobs"] = _completion_logprobs(_token_texts(model, choice.token_ids), choice.logprobs,
                                                         plan.logprobs, len(prefix))
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
    return len(token_ids(model, text, add_special_tokens=False)) if text else 0


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


def _delta_choice(plan: GenerationPlan, index: int, update: TokenUpdate, offset: int,
                  tokens: list[str] | None = None) -> dict:
    """A completions stream choice (chat choices: _chat_choices); `tokens`: the update's token texts
    when log-probabilities are asked for."""
    choice = {"index": index, "text": update.text, "logprobs": None, "finish_reason": update.finish_reason}
    if tokens is not None:
        choice["logprobs"] = _completion_logprobs(tokens, update.logprobs, plan.logprobs, offset)
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
        tokens = None
        if plan.logprobs is not None and update.token_ids:
            tokens = await _off_loop(model, _token_texts, model, update.token_ids)
        if plan.kind == "chat":
            for choice in _chat_choices(plan, index, update, chats[index], tokens):
                yield _chunk(plan, [choice])
            continue
        if update.text or tokens is not None:
            content = TokenUpdate(text=update.text, token_ids=update.token_ids, logprobs=update.logprobs)
            yield _chunk(plan, [_delta_choice(plan, index, content, offsets[index], tokens)])
            offsets[index] += len(update.text)
        if finish:  # OpenAI ends each choice with a chunk of its own: empty delta + finish_reason
            yield _chunk(plan, [_delta_choice(plan, index, TokenUpdate(finish_reason=finish), offsets[index])])
    if plan.include_usage:
        reasoning_tokens = None
        if plan.kind == "chat" and plan.reasoning:
            texts = ["".join(chat.reasoning_text) for chat in chats]
            reasoning_tokens = await _off_loop(model, lambda: sum(_count_tokens(model, text) for text in texts))
        yield _chunk(plan, [], _usage(plan, completion_tokens, reasoning_tokens))


def _chat_choices(plan: GenerationPlan, index: int, update: TokenUpdate, chat: ChatDeltas,
                  tokens: list[str] | None) -> list[dict]:
    """The chunk choices one update of a chat choice makes: its deltas (log-probabilities on the first),
    then, when it ends, an empty delta with the finish reason."""
    deltas = chat.feed(update.text) if update.text else []
    if update.finish_reason:
        deltas += chat.finish()
    wants_logprobs = tokens is not None
    if wants_logprobs and not deltas:
        deltas = [{}]
    choices = [{"index": index, "delta": delta, "logprobs": None, "finish_reason": None} for delta in deltas]
    if wants_logprobs:
        choices[0]["logprobs"] = _chat_logprobs(tokens, update.logprobs, plan.logprobs)
    if update.finish_reason:
        choices.append({"index": index, "delta": {}, "logprobs": None,
                        "finish_reason": chat.finish_reason(update.finish_reason)})
    return choices
