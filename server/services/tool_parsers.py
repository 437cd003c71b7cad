"""Tool calls in generated text, per model family, parsed incrementally.

A model announces tool calls in the format it was trained on. Each parser here is one ToolStream:
text goes in as it is generated (feed) and events come out: content text, the start of a call (its
index and function name) and fragments of its arguments (raw JSON text; their concatenation is the
call's `arguments`). Unary responses run the same stream over the whole text, so streamed and unary
answers cannot disagree. No markup ever reaches content: text that may be the beginning of a marker
is held back until it is known not to be one.

Formats:
  hermes       text, then <tool_call>{"name": ..., "arguments": {...}}</tool_call> (repeated): Hermes,
               Qwen 2.5 / Qwen 3
  mistral      text, then [TOOL_CALLS][{"name": ..., "arguments": {...}}, ...]
  llama3_json  the whole answer is {"name": ..., "parameters": {...}} (several joined by ";"), maybe
               after <|python_tag|>: Llama 3.1-3.3
  pythonic     the whole answer is [get_weather(city="Paris"), ...]: Llama 3.2 / 4 pythonic templates
  json         the whole answer is [{"name": ..., "arguments": {...}}, ...]: this server's generic
               format for chat templates that know no tools, and the form constrained calls take
"""

from __future__ import annotations

import ast
import json
import re
from dataclasses import dataclass, field

_ARGUMENT_KEYS = ("arguments", "parameters")


@dataclass
class Content:
    text: str


@dataclass
class CallStart:
    index: int
    name: str


@dataclass
class Arguments:
    index: int
    fragment: str


Event = Content | CallStart | Arguments


@dataclass
class ToolCall:
    name: str
    arguments: str  # JSON text of an object


@dataclass
class ParsedOutput:
    content: str
    calls: list[ToolCall] = field(default_factory=list)


# ----------------------------------------------------------------------------- scanning JSON calls


@dataclass
class _ScannedCall:
    name: str | None = None  # known once its string is complete
    arguments_start: int | None = None
    arguments_end: int | None = None  # None: still being generated
    complete: bool = False


def _scan_object(text: str, start: int) -> tuple[_ScannedCall, int]:
    """One {"name": ..., "arguments": ...} object from text[start] == "{", as far as text goes; returns
    the call and the index after it (len(text) if it is incomplete)."""
    call = _ScannedCall()
    depth, in_string, escaped = 0, False, False
    key: str | None = None
    expect_key, string_start, value_key, value_start = False, 0, None, None
    i = start
    while i < len(text):
        char = text[i]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
                if depth == 1 and expect_key:
                    key = _loads(text[string_start:i + 1])
                    expect_key = False
                elif depth == 1 and value_key is not None:  # a string value ends
                    _end_value(call, text, value_key, value_start, i + 1)
                    value_key = None
        elif char == '"':
            in_string = True
            string_start = i
        elif char in "{[":
            depth += 1
            if depth == 1:
                expect_key = True
        elif char in "}]":
            depth -= 1
            if depth == 1 and value_key is not None and text[value_start] in "{[":
                _end_value(call, text, value_key, value_start, i + 1)
                value_key = None
            if depth == 0:
                if value_key is not None:  # a literal value ends at the closing brace
                    _end_value(call, text, value_key, value_start, i)
                call.complete = True
                return call, i + 1
        elif depth == 1 and char == ":":
            value_key, value_start = key, None  # the value starts at the next non-space character
            i += 1
            continue
        elif depth == 1 and char == ",":
            if value_key is not None:
                _end_value(call, text, value_key, value_start, i)
                value_key = None
            expect_key = True
        if value_key is not None and value_start is None and not char.isspace():
            value_start = i
            if value_key in _ARGUMENT_KEYS:
                call.arguments_start = i
        i += 1
    return call, len(text)


def _end_value(call: _ScannedCall, text: str, key: str | None, start: int | None, end: int) -> None:
    if start is None:
        return
    if key == "name":
        name = _loads(text[start:end].strip())
        call.name = name if isinstance(name, str) else None
    elif key in _ARGUMENT_KEYS and call.arguments_start == start:
        call.arguments_end = len(text[:end].rstrip())


def _loads(text: str):
    try:
        return json.loads(text)
    except (ValueError, RecursionError):  # model output may be any text, "[[[[..." included
        return None


def _scan_calls(region: str, markers: tuple[str, ...]) -> tuple[list[_ScannedCall], str]:
    """Every call object in `region`, and the other text found between them (not separators/markers)."""
    calls: list[_ScannedCall] = []
    leftover: list[str] = []
    i = 0
    while i < len(region):
        if region[i] == "{":
            call, i = _scan_object(region, i)
            calls.append(call)
            if not call.complete:
                break
            continue
        marker = next((m for m in markers if region.startswith(m, i)), None)
        if marker:
            i += len(marker)
            continue
        if region[i] not in " \t\r\n[],;":
            leftover.append(region[i])
        i += 1
    return calls, "".join(leftover)


# ----------------------------------------------------------------------------- streams


class ToolStream:
    """Text in, events out. `opening`: the marker before the calls (found anywhere unless `anchored`,
    where calls count only at the very start of the answer); `markers`: markup skipped between calls."""

    def __init__(self, *, opening: tuple[str, ...], markers: tuple[str, ...] = (), anchored: bool,
                 starts: tuple[str, ...] = ()) -> None:
        self._openings = opening
        self._markers = markers + opening
        self._anchored = anchored
        self._starts = starts  # for anchored formats: first characters that begin calls ("{", "[")
        self._pending = ""  # held-back text: may begin a marker
        self._region: str | None = None  # text after the opening, once calls began
        self._decided = not anchored
        self._started: list[bool] = []
        self._sent: list[int] = []  # argument characters sent per call
        self._finished = False

    def feed(self, text: str) -> list[Event]:
        if self._region is not None:
            self._region += text
            return self._call_events(final=False)
        self._pending += text
        if not self._decided:
            return self._decide_start()
        return self._content_events()

    def finish(self) -> list[Event]:
        if self._finished:
            return []
        self._finished = True
        if self._region is None:
            text, self._pending = self._pending, ""
            return [Content(text)] if text else []
        return self._call_events(final=True)

    # content until an opening marker
    def _decide_start(self) -> list[Event]:
        stripped = self._pending.lstrip()
        if not stripped:
            return []
        for opening in self._openings + self._starts:
            if stripped.startswith(opening):
                self._decided = True
                self._region = stripped[len(opening):] if opening in self._openings else stripped
                self._pending = ""
                return self._call_events(final=False)
            if opening.startswith(stripped):
                return []  # could still become this opening
        self._decided, self._openings = True, ()  # plain text: calls only count at the start
        return self._content_events()

    def _content_events(self) -> list[Event]:
        text = self._pending
        for opening in self._openings:
            at = text.find(opening)
            if at >= 0:
                self._pending = ""
                self._region = text[at + len(opening):]
                events: list[Event] = [Content(text[:at])] if text[:at] else []
                return events + self._call_events(final=False)
        hold = max((k for opening in self._openings for k in range(1, len(opening))
                    if text.endswith(opening[:k])), default=0)
        self._pending = text[len(text) - hold:] if hold else ""
        sendable = text[: len(text) - hold]
        return [Content(sendable)] if sendable else []

    # calls
    def _calls_text(self, final: bool) -> str | None:
        """The text holding the calls (None: cannot tell yet)."""
        return self._region or ""

    def _call_events(self, *, final: bool) -> list[Event]:
        text = self._calls_text(final)
        if text is None:
            return []
        calls, leftover = _scan_calls(text, self._markers)
        events: list[Event] = []
        for index, call in enumerate(calls):
            if index == len(self._started):
                self._started.append(False)
                self._sent.append(0)
            if call.name is None:
                continue
            if not self._started[index]:
                self._started[index] = True
                events.append(CallStart(index, call.name))
            fragment = self._arguments_fragment(text, call, index)
            if fragment:
                events.append(Arguments(index, fragment))
        if final:
            events += self._final_fixups(calls, leftover)
        return events

    def _arguments_fragment(self, region: str, call: _ScannedCall, index: int) -> str:
        if call.arguments_start is None:
            if call.complete and self._sent[index] == 0:
                self._sent[index] = 2
                return "{}"
            return ""
        end = call.arguments_end if call.arguments_end is not None else len(region)
        raw = region[call.arguments_start:end]
        if raw.startswith('"'):  # arguments given as a JSON string holding the object: send it decoded
            if call.arguments_end is None or self._sent[index]:
                return ""
            decoded = _loads(raw)
            text = decoded if isinstance(decoded, str) else raw
            self._sent[index] = len(text)
            return text
        fragment = raw[self._sent[index]:]
        self._sent[index] = len(raw)
        return fragment

    def _final_fixups(self, calls: list[_ScannedCall], leftover: str) -> list[Event]:
        if not any(self._started):  # no call came out whole: it was all text after all
            return [Content(self._opening_text() + (self._region or ""))]
        return [Content(leftover)] if leftover.strip() else []

    def _opening_text(self) -> str:
        return ""


class _MarkedStream(ToolStream):
    """Formats whose calls follow a marker: if no call parses, the marker was text and is sent back."""

    def __init__(self, opening: str, markers: tuple[str, ...] = ()) -> None:
        super().__init__(opening=(opening,), markers=markers, anchored=False)
        self._opening = opening

    def _opening_text(self) -> str:
        return self._opening


class PythonicStream(ToolStream):
    """[f(a=1), g(b="x")]: held back until the answer ends, then parsed with ast."""

    def __init__(self) -> None:
        super().__init__(opening=(), anchored=True, starts=("[",))

    def _call_events(self, *, final: bool) -> list[Event]:
        if not final:
            return []
        calls = _pythonic_calls(self._region or "")
        if calls is None:
            return [Content(self._region or "")]
        events: list[Event] = []
        for index, call in enumerate(calls):
            events += [CallStart(index, call.name), Arguments(index, call.arguments)]
        return events


class JsonStream(ToolStream):
    """The generic format: {"tool_calls": [call, ...]} (what GenAI's renderer shows the model, and what
    constrained calls are generated as), or a bare array of calls, or one bare call object."""

    _WRAPPER = re.compile(r'\{\s*"tool_calls"\s*:\s*')

    def __init__(self) -> None:
        super().__init__(opening=(), anchored=True, starts=("[", "{"))

    def _calls_text(self, final: bool) -> str | None:
        region = self._region or ""
        if not region.startswith("{"):
            return region
        wrapper = self._WRAPPER.match(region)
        if wrapper:
            return region[wrapper.end():]
        rest = region[1:].lstrip()
        if not final and (not rest or ('"tool_calls"'.startswith(rest) or
                                       (rest.startswith('"tool_calls"') and not rest[12:].strip()))):
            return None  # may still become the wrapper
        return region

    def _final_fixups(self, calls: list[_ScannedCall], leftover: str) -> list[Event]:
        if not any(self._started):
            return [Content(self._region or "")]
        return []  # the rest of the wrapper object is JSON punctuation


def _pythonic_calls(text: str) -> list[ToolCall] | None:
    try:
        tree = ast.parse(text.strip(), mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(tree, ast.List) or not tree.elts:
        return None
    calls = []
    for node in tree.elts:
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Name) or node.args:
            return None
        try:
            arguments = {keyword.arg: ast.literal_eval(keyword.value) for keyword in node.keywords}
        except ValueError:
            return None
        calls.append(ToolCall(node.func.id, json.dumps(arguments, ensure_ascii=False)))
    return calls


def new_stream(parser: str) -> ToolStream:
    if parser == "hermes":
        return _MarkedStream("<tool_call>", markers=("</tool_call>",))
    if parser == "mistral":
        return _MarkedStream("[TOOL_CALLS]")
    if parser == "llama3_json":
        return ToolStream(opening=("<|python_tag|>",), anchored=True, starts=("{",))
    if parser == "pythonic":
        return PythonicStream()
    if parser == "json":
        return JsonStream()
    raise ValueError(f"unknown tool parser {parser!r}")


def parse(parser: str, text: str) -> ParsedOutput:
    """The whole answer at once: the same events as streaming, gathered."""
    stream = new_stream(parser)
    return gather(stream.feed(text) + stream.finish())


def gather(events: list[Event]) -> ParsedOutput:
    content: list[str] = []
    calls: list[ToolCall] = []
    for event in events:
        if isinstance(event, Content):
            content.append(event.text)
        elif isinstance(event, CallStart):
            calls.append(ToolCall(event.name, ""))
        else:
            calls[event.index].arguments += event.fragment
    return ParsedOutput("".join(content), calls)
