"""Tool calling on /v3/chat/completions: the request's tools, how they reach the model, and how its
answer is read back.

- Tools reach the model through its chat template's `tools` variable. For a template that knows no
  tools, OpenVINO GenAI's template renderer (minja, as in llama.cpp's server) describes them in a
  system message, and renders earlier calls and tool results as JSON text: the generic format, read
  back by the `json` parser.
- `tool_choice: "required"` or a named function: generation is constrained (tool_grammar.py) to calls
  whose name exists and whose arguments validate against the tool's schema (whatever the model), in
  the model's own framing where tool_grammar knows it (hermes), else the generic
  {"tool_calls": [{"name": <one of the tools>, "arguments": <that tool's parameters>}, ...]}.
- `tool_choice: "auto"`: the model decides; its answer is read with the model's parser
  (text_generation.tool_parser in config.json, else detected from the chat template). In the formats
  of tool_grammar.FRAMED_FORMATS, a call the model begins is finished under the same grammar.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

from server.errors import BadRequest
from server.services import tool_grammar, tool_parsers
from server.services.structured_output import check_json_schema
from server.settings import Limits

NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
EMPTY_PARAMETERS = {"type": "object", "properties": {}}

# Template text that tells which format a model calls tools in.
_TEMPLATE_MARKERS = (("<tool_call>", "hermes"), ("[TOOL_CALLS]", "mistral"), ("<|python_tag|>", "llama3_json"))


@dataclass
class ToolPlan:
    tools: list[dict]  # OpenAI function tools as given (parameters filled in)
    parser: str  # how the answer is read: a tool_parsers name
    grammar: dict | None = None  # the structural tag required / named calls are generated under (tool_grammar)
    guard: dict | None = None  # for "auto": the triggered tag that constrains the calls the model begins


def template_parser(chat_template: str) -> str | None:
    """The call format a chat template teaches, when it says so unambiguously."""
    found = {parser for marker, parser in _TEMPLATE_MARKERS if marker in chat_template}
    return found.pop() if len(found) == 1 else None


def knows_tools(chat_template: str) -> bool:
    return "tools" in chat_template


def plan_tools(body: dict, *, chat_template: str, configured_parser: str | None, limits: Limits) -> ToolPlan | None:
    """None when the request asks for no tool calling (no tools, or tool_choice "none")."""
    tools = body.get("tools") or []
    choice = body.get("tool_choice")
    if not tools:
        if isinstance(choice, dict) or choice == "required":
            raise BadRequest("'tool_choice' asks for a tool call, but the request has no 'tools'", param="tool_choice")
        return None
    checked = [_checked_tool(tool, index, limits) for index, tool in enumerate(tools)]
    names = [tool["function"]["name"] for tool in checked]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise BadRequest(f"Tool names must be unique; repeated: {', '.join(duplicates)}", param="tools")
    total = sum(len(json.dumps(tool["function"]["parameters"]).encode()) for tool in checked)
    if total > limits.max_schema_bytes:
        raise BadRequest(f"The tools' parameter schemas total {total} bytes; at most {limits.max_schema_bytes} are "
                         "allowed", param="tools", code="invalid_tool_schema")
    if choice == "none":
        return None
    parallel = body.get("parallel_tool_calls") is not False
    # a template that knows no tools gets GenAI's renderer, which teaches the generic format (json)
    parser = configured_parser or (template_parser(chat_template) if knows_tools(chat_template) else None) or "json"
    if isinstance(choice, dict) or choice == "required":
        forced = parser if parser in tool_grammar.FRAMED_FORMATS else "json"  # the model's own framing if we can
        if isinstance(choice, dict):
            name = choice["function"]["name"]
            if name not in names:
                raise BadRequest(f"tool_choice names the function '{name[:64]}', which is not among the tools "
                                 f"({', '.join(names)})", param="tool_choice.function.name")
            chosen, most = [tool for tool in checked if tool["function"]["name"] == name], 1
        else:
            chosen, most = checked, tool_grammar.MAX_PARALLEL_CALLS if parallel else 1
        return ToolPlan(checked, forced, tool_grammar.calls_tag(chosen, most=most, parser=forced))
    return ToolPlan(checked, parser, guard=tool_grammar.triggered_calls(checked, parser, parallel=parallel))


def _checked_tool(tool: dict, index: int, limits: Limits) -> dict:
    function = tool["function"]
    name = function["name"]
    if not NAME.match(name):
        raise BadRequest(f"Invalid tool name {name[:80]!r}: use 1-64 letters, digits, underscores or dashes",
                         param=f"tools[{index}].function.name")
    parameters = function.get("parameters")
    if parameters is None:
        parameters = EMPTY_PARAMETERS
    try:
        check_json_schema(parameters, limits)
    except BadRequest as exc:
        reason = str(exc.message).removeprefix("response_format.json_schema.schema: ")
        raise BadRequest(f"tools[{index}].function.parameters {reason}", param=f"tools[{index}].function.parameters",
                         code="invalid_tool_schema") from None
    if parameters.get("type", "object") != "object":
        raise BadRequest("A tool's parameters must be a JSON Schema of type object",
                         param=f"tools[{index}].function.parameters")
    return {"type": "function", "function": {**function, "parameters": parameters}}


def template_messages(messages: list[dict]) -> list[dict]:
    """OpenAI messages as chat templates expect them: text content, assistant tool_calls with their
    arguments as objects (templates serialize them themselves), tool results with their call ids."""
    out = []
    for index, message in enumerate(messages):
        role = "system" if message["role"] == "developer" else message["role"]
        entry: dict[str, Any] = {"role": role, "content": _text(message.get("content"))}
        if role == "assistant" and message.get("tool_calls"):
            entry["tool_calls"] = [_template_call(call, f"messages[{index}].tool_calls[{number}]")
                                   for number, call in enumerate(message["tool_calls"])]
        if role == "tool":
            entry["tool_call_id"] = message.get("tool_call_id", "")
            if message.get("name"):
                entry["name"] = message["name"]
        out.append(entry)
    return out


def _text(content: str | list[dict] | None) -> str:
    if content is None:
        return ""
    return content if isinstance(content, str) else "\n".join(part["text"] for part in content)


def _template_call(call: dict, where: str) -> dict:
    """Arguments must be a JSON object's text: templates re-serialize them (GenAI's renderer printed
    parse errors with raw bytes to stderr for anything else)."""
    function = call["function"]
    try:
        arguments = json.loads(function["arguments"] or "{}")
    except (ValueError, RecursionError):  # RecursionError: "[[[..." within the string limit
        arguments = None
    if not isinstance(arguments, dict):
        raise BadRequest("A tool call's arguments must be the JSON text of an object", param=f"{where}.function.arguments")
    return {"id": call.get("id", ""), "type": "function",
            "function": {"name": function["name"], "arguments": arguments}}


def call_id() -> str:
    import uuid

    return f"call_{uuid.uuid4().hex[:24]}"


def message_calls(calls: list[tool_parsers.ToolCall]) -> list[dict]:
    return [{"id": call_id(), "type": "function", "function": {"name": call.name, "arguments": call.arguments}}
            for call in calls]

