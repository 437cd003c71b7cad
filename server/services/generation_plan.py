"""OpenAI chat/completions and completions requests -> a GenerationPlan.

plan_*() turns a validated request body into token ids and one GenerationConfig per choice (raising
BadRequest with `param` for what the schema cannot check): templating, tool calling, limits, sampling.
Runs on the model's preparation thread (templating and tokenizing a large prompt take seconds).
"""

from __future__ import annotations

import json
import time
import uuid
from dataclasses import dataclass, field

import structlog

from server.errors import BadRequest, Unsupported
from server.pipelines.generation import GenerationModel
from server.pipelines.sampling import build_config
from server.services import reasoning
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


def token_ids(model: GenerationModel, text: str, *, add_special_tokens: bool) -> list[int]:
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
    if model.settings.prompt_lookup:  # the engine needs both on every request once prompt_lookup is on
        params["num_assistant_tokens"] = model.settings.num_assistant_tokens
        params["max_ngram_size"] = model.settings.max_ngram_size
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


def _constrained_format(body: dict) -> bool:
    return (body.get("response_format") or {}).get("type", "text") != "text"


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
        if _constrained_format(body):
            raise BadRequest("'response_format' cannot be combined with tool_choice 'required' or a named function",
                             param="tool_choice")
        call_grammar = json.dumps(tool_plan.grammar)
    elif tool_plan is not None and tool_plan.guard is not None and not _constrained_format(body):
        call_grammar = json.dumps(tool_plan.guard)  # response_format, if any, wins over the guard
    prompt = chat_prompt(model, body, tool_plan)
    prompt_ids = token_ids(model, prompt, add_special_tokens=False)  # the template adds special tokens itself
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
        return [(text, token_ids(model, text, add_special_tokens=True)) for text in texts]
    id_lists = [prompt] if isinstance(prompt[0], int) else prompt
    for index, ids in enumerate(id_lists):
        if model.vocab_size is not None and max(ids) >= model.vocab_size:
            raise BadRequest(f"Prompt {index} has token id {max(ids)}, beyond this model's vocabulary of "
                             f"{model.vocab_size}", param="prompt")
    return [(model.tokenizer.decode(ids), list(ids)) for ids in id_lists]


def _plan(kind: str, model_id: str, model: GenerationModel, body: dict, prompts: list[tuple[str, list[int]]],
          prompt_param: str, logprobs: int | None, limits: Limits, call_grammar: str | None = None) -> GenerationPlan:
    """Runs on a worker thread (templating and tokenizing a large prompt take seconds). `call_grammar`:
    the structural tag tool calls are generated under (required / named, or auto's guard), instead of
    response_format."""
    stops = _stops(body, limits)
    max_new_tokens = _max_new_tokens(model, body, max(len(ids) for _, ids in prompts), prompt_param)
    json_schema = None if call_grammar is not None else _json_schema(body, limits)
    n = body.get("n") or 1
    if n > 1 and model.settings.prompt_lookup:
        raise BadRequest("n > 1 is not available on this model: it uses prompt-lookup decoding "
                         "(text_generation.prompt_lookup in its config.json), which the engine cannot combine "
                         "with several choices per request", param="n", code="unsupported_parameter")
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
