"""OpenAI chat/completions and completions against the real server on tiny-chat, with the official client.

tiny-chat is trained to answer every chat prompt with REPLY then EOS, and `{"answer": "yes"}` when the
last user message contains "JSON"; so contents, finish reasons and token counts are exact.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import jsonschema
import openai
import openvino_genai as ov_genai
import pytest
import requests
from openai import AsyncOpenAI, OpenAI

from tests.e2e.harness import ServerProcess, active_generations, model_gauge, wait_for

REPLY = "Hello! I am a tiny test model."
MODEL = "tiny-chat"
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)


@pytest.fixture(scope="module")
def tokenizer(models: Path) -> ov_genai.Tokenizer:
    return ov_genai.Tokenizer(str(models / "tiny-chat" / "1"))


def count_tokens(tokenizer: ov_genai.Tokenizer, text: str, *, special: bool) -> int:
    return tokenizer.encode(text, add_special_tokens=special).input_ids.shape[1]


def test_chat_unary(client: OpenAI, tokenizer: ov_genai.Tokenizer) -> None:
    response = client.chat.completions.create(model=MODEL, messages=HI)
    assert response.object == "chat.completion"
    assert response.id.startswith("chatcmpl-")
    assert response.model == MODEL
    (choice,) = response.choices
    assert (choice.index, choice.message.role, choice.message.content, choice.finish_reason) == (0, "assistant", REPLY, "stop")
    prompt = tokenizer.apply_chat_template(HI, add_generation_prompt=True)
    assert response.usage.prompt_tokens == count_tokens(tokenizer, prompt, special=False)
    # completion tokens count what the model generated, the final EOS included
    assert response.usage.completion_tokens == count_tokens(tokenizer, REPLY, special=False) + 1
    assert response.usage.total_tokens == response.usage.prompt_tokens + response.usage.completion_tokens


def test_chat_content_parts_system_and_developer(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=[
        {"role": "developer", "content": "be nice"},
        {"role": "user", "content": [{"type": "text", "text": "hello"}, {"type": "text", "text": "there"}]},
    ])
    assert response.choices[0].message.content == REPLY


def test_chat_stream_with_usage(client: OpenAI) -> None:
    chunks = list(client.chat.completions.create(model=MODEL, messages=HI, stream=True,
                                                 stream_options={"include_usage": True}))
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    finish = [c for c in chunks if c.choices and c.choices[0].finish_reason]
    assert [c.choices[0].finish_reason for c in finish] == ["stop"]
    assert finish[0].choices[0].delta.content is None
    assert chunks[-1].choices == [] and chunks[-1].usage.completion_tokens > 0
    assert len({c.id for c in chunks}) == 1


def test_completions_unary_and_stream(client: OpenAI, tokenizer: ov_genai.Tokenizer) -> None:
    response = client.completions.create(model=MODEL, prompt="Once upon a time", max_tokens=64)
    assert response.object == "text_completion"
    assert response.choices[0].text == REPLY
    assert response.choices[0].finish_reason == "stop"
    assert response.usage.prompt_tokens == count_tokens(tokenizer, "Once upon a time", special=True)
    chunks = list(client.completions.create(model=MODEL, prompt="Once upon a time", stream=True))
    assert "".join(c.choices[0].text for c in chunks if c.choices) == REPLY
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_completions_prompt_lists(client: OpenAI, tokenizer: ov_genai.Tokenizer) -> None:
    """Strings, token ids and token-id lists, as OpenAI defines them: choices prompt by prompt."""
    ids = tokenizer.encode("Once upon a time").input_ids.data[0].tolist()
    for prompt, count in ((["Once upon a time", "hey"], 2), (ids, 1), ([ids, ids[:2], ids], 3)):
        response = client.completions.create(model=MODEL, prompt=prompt, max_tokens=64, n=2)
        assert [c.index for c in response.choices] == list(range(2 * count))
        assert all(c.text == REPLY and c.finish_reason == "stop" for c in response.choices)
    lengths = [len(tokenizer.encode(text).input_ids.data[0]) for text in ("Once upon a time", "hey")]
    response = client.completions.create(model=MODEL, prompt=["Once upon a time", "hey"], max_tokens=64)
    assert response.usage.prompt_tokens == sum(lengths)
    echoed = client.completions.create(model=MODEL, prompt=["Once upon a time", "hey"], echo=True, max_tokens=2)
    assert [c.text[: len(p)] for c, p in zip(echoed.choices, ["Once upon a time", "hey"])] == ["Once upon a time", "hey"]
    chunks = list(client.completions.create(model=MODEL, prompt=["a", "b", "c"], stream=True, max_tokens=64))
    texts: dict[int, str] = {}
    for chunk in chunks:
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + choice.text
    assert texts == {0: REPLY, 1: REPLY, 2: REPLY}


def test_completions_echo_and_logprobs(client: OpenAI) -> None:
    plain = client.completions.create(model=MODEL, prompt="hey", max_tokens=3).choices[0].text
    assert REPLY.startswith(plain) and plain
    response = client.completions.create(model=MODEL, prompt="hey", echo=True, max_tokens=3)
    assert response.choices[0].text == "hey" + plain
    response = client.completions.create(model=MODEL, prompt="hey", logprobs=1, max_tokens=3)
    logprobs = response.choices[0].logprobs
    assert "".join(logprobs.tokens) == response.choices[0].text == plain
    assert len(logprobs.token_logprobs) == 3 and all(lp <= 0 for lp in logprobs.token_logprobs)
    assert logprobs.text_offset == [sum(len(t) for t in logprobs.tokens[:i]) for i in range(3)]


def test_chat_logprobs(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=HI, logprobs=True, top_logprobs=1, max_tokens=4)
    content = response.choices[0].logprobs.content
    assert "".join(c.token for c in content) == response.choices[0].message.content
    assert all(c.logprob <= 0 and c.top_logprobs[0].token == c.token for c in content)


def test_n_choices(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=HI, n=3)
    assert [c.index for c in response.choices] == [0, 1, 2]
    assert all(c.message.content == REPLY for c in response.choices)
    chunks = list(client.chat.completions.create(model=MODEL, messages=HI, n=2, stream=True))
    for index in (0, 1):
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices and c.choices[0].index == index)
        assert text == REPLY


def test_stop_and_length(client: OpenAI) -> None:
    response = client.chat.completions.create(model=MODEL, messages=HI, stop=["am"])
    assert (response.choices[0].message.content, response.choices[0].finish_reason) == ("Hello! I ", "stop")
    response = client.chat.completions.create(model=MODEL, messages=HI, stop="tiny",
                                              extra_body={"include_stop_str_in_output": True})
    assert response.choices[0].message.content == "Hello! I am a tiny"
    response = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=3)
    assert (response.choices[0].finish_reason, response.usage.completion_tokens) == ("length", 3)
    response = client.chat.completions.create(model=MODEL, messages=HI, max_completion_tokens=2)
    assert response.usage.completion_tokens == 2
    stream = client.chat.completions.create(model=MODEL, messages=HI, stop=["tiny"], stream=True)
    assert "".join(c.choices[0].delta.content or "" for c in stream if c.choices) == "Hello! I am a "


def test_sampling_parameters_are_accepted(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=HI, temperature=0.7, top_p=0.9, seed=7, presence_penalty=0.1, frequency_penalty=0.1,
        user="tester", extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.05, "ignore_eos": False},
    )
    again = client.chat.completions.create(
        model=MODEL, messages=HI, temperature=0.7, top_p=0.9, seed=7, presence_penalty=0.1, frequency_penalty=0.1,
        user="tester", extra_body={"top_k": 20, "min_p": 0.05, "repetition_penalty": 1.05, "ignore_eos": False},
    )
    assert response.choices[0].message.content == again.choices[0].message.content  # same seed, same output
    response = client.chat.completions.create(model=MODEL, messages=HI, max_tokens=30, extra_body={"ignore_eos": True})
    assert (response.choices[0].finish_reason, response.usage.completion_tokens) == ("length", 30)


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "enum": ["yes", "no"]},
        {"type": "object", "properties": {"answer": {"type": "string", "enum": ["yes", "no"]}},
         "required": ["answer"], "additionalProperties": False},
    ],
    ids=["enum", "object"],
)
def test_json_schema_output_parses_and_validates(client: OpenAI, schema: dict) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Reply in JSON please"}], max_tokens=60,
        response_format={"type": "json_schema", "json_schema": {"name": "answer", "schema": schema}},
    )
    assert response.choices[0].finish_reason == "stop"
    jsonschema.validate(json.loads(response.choices[0].message.content), schema)


def test_json_object_output_parses(client: OpenAI) -> None:
    response = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Reply in JSON please"}], max_tokens=60,
        response_format={"type": "json_object"},
    )
    assert response.choices[0].finish_reason == "stop"
    assert isinstance(json.loads(response.choices[0].message.content), dict)


def test_v1_prefix_and_raw_http(server: ServerProcess) -> None:
    response = requests.post(server.url("/v3/v1/chat/completions"), json={"model": MODEL, "messages": HI}, timeout=30)
    assert response.json()["choices"][0]["message"]["content"] == REPLY
    with requests.post(server.url("/v3/completions"), json={"model": MODEL, "prompt": "x", "stream": True},
                       stream=True, timeout=30) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        lines = [line for line in response.iter_lines() if line]
    assert lines[-1] == b"data: [DONE]"
    assert all(line.startswith(b"data: ") for line in lines)


async def test_sixteen_concurrent_streams(server: ServerProcess) -> None:
    client = AsyncOpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)

    async def one(i: int) -> str:
        stream = await client.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": f"hello number {i}"}], stream=True)
        return "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])

    results = await asyncio.gather(*(one(i) for i in range(16)))
    assert results == [REPLY] * 16
    unary = await asyncio.gather(*(client.completions.create(model=MODEL, prompt=f"p{i}") for i in range(8)))
    assert [r.choices[0].text for r in unary] == [REPLY] * 8
    await client.close()


def test_disconnect_mid_stream_frees_the_request(server: ServerProcess) -> None:
    body = {"model": MODEL, "messages": HI, "stream": True, "max_tokens": 1000, "ignore_eos": True}
    response = requests.post(server.url("/v3/chat/completions"), json=body, stream=True, timeout=30)
    lines = response.iter_lines()
    for _ in range(3):
        next(lines)
    assert active_generations(server, MODEL) == 1
    response.close()  # the client goes away
    started = time.monotonic()
    wait_for(lambda: active_generations(server, MODEL) == 0, timeout=10, what="request cancelled")
    assert time.monotonic() - started < 5
    # The worker has taken the cancel and freed the request (its pipeline holds none); whatever it
    # generated before that came through the pipe first, in order, and is counted already.
    wait_for(lambda: engine_requests(server) == 0, timeout=10, what="the worker freed the request")
    tokens_then = generated_tokens(server)
    time.sleep(0.5)
    # Nothing is generating for nobody: tiny-chat would make dozens of tokens in 0.5 s.
    assert generated_tokens(server) == tokens_then


def engine_requests(server: ServerProcess, model: str = MODEL) -> float:
    """Requests the model's pipeline held at its latest step, as its worker reported."""
    return model_gauge(server, "ovms_engine_requests", model)


def generated_tokens(server: ServerProcess) -> float:
    total = 0.0
    for line in server.get("/metrics").text.splitlines():
        if line.startswith("ovms_generated_tokens_total{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL}, None),
        ({"model": MODEL, "messages": []}, "messages"),
        ({"model": MODEL, "messages": [{"role": "tool", "content": "x"}]}, "messages[0]"),  # no tool_call_id
        ({"model": MODEL, "messages": [{"role": "critic", "content": "x"}]}, "messages[0].role"),
        ({"model": MODEL, "messages": [{"role": "user"}]}, "messages[0]"),  # content only optional for assistants
        ({"model": MODEL, "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
         "messages[0].content[0].type"),
        ({"model": MODEL, "messages": HI, "temperature": 3}, "temperature"),
        ({"model": MODEL, "messages": HI, "top_p": 0}, "top_p"),
        ({"model": MODEL, "messages": HI, "n": 0}, "n"),
        ({"model": MODEL, "messages": HI, "max_tokens": 0}, "max_tokens"),
        ({"model": MODEL, "messages": HI, "max_tokens": 100000}, "max_tokens"),
        ({"model": MODEL, "messages": HI, "stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"model": MODEL, "messages": HI, "stream": "yes"}, "stream"),
        ({"model": MODEL, "messages": HI, "stream_options": {"include_usage": True}}, "stream_options"),
        ({"model": MODEL, "messages": HI, "top_logprobs": 1}, "top_logprobs"),
        ({"model": MODEL, "messages": HI, "logprobs": True, "top_logprobs": 5}, "top_logprobs"),
        ({"model": MODEL, "messages": HI, "functions": [{"name": "f"}]}, "functions"),
        ({"model": MODEL, "messages": [{"role": "assistant", "content": None, "tool_calls": [
            {"id": "c", "type": "function", "function": {"name": "f", "arguments": "{not json"}}]}, *HI]},
         "messages[0].tool_calls[0].function.arguments"),
        ({"model": MODEL, "messages": HI, "logit_bias": {"1": 5}}, "logit_bias"),
        ({"model": MODEL, "messages": HI, "response_format": {"type": "xml"}}, "response_format.type"),
        ({"model": MODEL, "messages": HI, "response_format": {"type": "json_schema", "json_schema": {"name": "x"}}},
         "response_format.json_schema"),
        ({"model": MODEL, "messages": [{"role": "user", "content": "word " * 1100}]}, "messages"),
        ({"model": "sentence-transformers/minilm", "messages": HI}, "model"),
    ],
)
def test_bad_chat_requests_are_400_with_param(server: ServerProcess, body: dict, param: str | None) -> None:
    response = requests.post(server.url("/v3/chat/completions"), json=body, timeout=30)
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["param"] == param
    assert error["type"] == "invalid_request_error"
    assert error["message"] and "Traceback" not in error["message"]


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"model": MODEL, "prompt": ["a", ""]}, "prompt"),
        ({"model": MODEL, "prompt": [1, 10**9]}, "prompt"),
        ({"model": MODEL, "prompt": [[1], []]}, "prompt[1]"),
        ({"model": MODEL, "prompt": [["a"]]}, "prompt[0][0]"),
        ({"model": MODEL, "prompt": ""}, "prompt"),
        ({"model": MODEL, "prompt": "x", "logprobs": 3}, "logprobs"),
        ({"model": MODEL, "prompt": "x", "echo": True, "logprobs": 1}, "echo"),
        ({"model": MODEL, "prompt": "x", "suffix": "y"}, "suffix"),
        ({"model": MODEL, "prompt": "x", "best_of": 2}, "best_of"),
        ({"model": MODEL, "prompt": "x", "max_tokens": 1024}, "max_tokens"),
    ],
)
def test_bad_completion_requests_are_400_with_param(server: ServerProcess, body: dict, param: str) -> None:
    response = requests.post(server.url("/v3/completions"), json=body, timeout=30)
    assert response.status_code == 400, response.text
    assert response.json()["error"]["param"] == param


def test_client_errors_surface_the_message(client: OpenAI, server: ServerProcess) -> None:
    with pytest.raises(openai.NotFoundError, match="The model 'nope' does not exist"):
        client.chat.completions.create(model="nope", messages=HI)
    with pytest.raises(openai.BadRequestError, match="serves task embeddings"):
        client.completions.create(model="sentence-transformers/minilm", prompt="x")
    response = requests.post(server.url("/v3/chat/completions"), data=b"{oops", timeout=30)
    assert response.status_code == 400 and response.json()["error"]["message"] == "The request body is not valid JSON"
    unknown = client.chat.completions.create(model=MODEL, messages=HI, extra_body={"some_future_field": 1})
    assert unknown.choices[0].message.content == REPLY  # unknown fields are ignored (and logged)
