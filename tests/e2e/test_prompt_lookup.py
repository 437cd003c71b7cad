"""Prompt-lookup decoding (text_generation.prompt_lookup) on the real demo SmolLM2: the same greedy
answer as without it, unary and streamed, alongside structured output and sampling; n > 1 is a clear 400."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from openai import BadRequestError, OpenAI

from tests.e2e.harness import copy_model, running_server

PLAIN, LOOKUP = "smollm2", "smollm2-lookup"
PASSAGE = ("The Eiffel Tower is a wrought-iron lattice tower on the Champ de Mars in Paris, France. It is named "
           "after the engineer Gustave Eiffel, whose company designed and built the tower from 1887 to 1889.")
QUOTE = [{"role": "user", "content": f"Repeat the following text exactly, word for word:\n\n{PASSAGE}"}]


@pytest.fixture(scope="module")
def client(models: Path, tmp_path_factory: pytest.TempPathFactory):
    lookup = tmp_path_factory.mktemp("lookup") / LOOKUP
    copy_model(models / "smollm2", lookup)
    config = json.loads((lookup / "config.json").read_text())
    config.setdefault("text_generation", {}).update(prompt_lookup=True, num_assistant_tokens=4, max_ngram_size=2)
    (lookup / "config.json").write_text(json.dumps(config))
    with running_server(tmp_path_factory.mktemp("repository"), {PLAIN: models / "smollm2", LOOKUP: lookup}) as server:
        server.wait_states(PLAIN, {"1": "AVAILABLE"})
        server.wait_states(LOOKUP, {"1": "AVAILABLE"})
        yield OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0, timeout=120)


def test_greedy_answers_are_the_same_with_prompt_lookup(client: OpenAI) -> None:
    plain = client.chat.completions.create(model=PLAIN, messages=QUOTE, max_tokens=60, temperature=0)
    lookup = client.chat.completions.create(model=LOOKUP, messages=QUOTE, max_tokens=60, temperature=0)
    assert "Eiffel" in plain.choices[0].message.content  # the model does quote: lookup has something to find
    assert lookup.choices[0].message.content == plain.choices[0].message.content
    assert lookup.usage.completion_tokens == plain.usage.completion_tokens
    stream = client.chat.completions.create(model=LOOKUP, messages=QUOTE, max_tokens=60, temperature=0, stream=True,
                                            stream_options={"include_usage": True})
    chunks = list(stream)
    streamed = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert streamed == plain.choices[0].message.content
    assert chunks[-1].usage.completion_tokens == plain.usage.completion_tokens


def test_structured_output_and_sampling_work_with_prompt_lookup(client: OpenAI) -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string", "maxLength": 20}}, "required": ["city"],
              "additionalProperties": False}
    response = client.chat.completions.create(
        model=LOOKUP, messages=[{"role": "user", "content": "Which city is the Eiffel Tower in? Answer in JSON."}],
        max_tokens=40, response_format={"type": "json_schema", "json_schema": {"name": "c", "schema": schema}})
    assert set(json.loads(response.choices[0].message.content)) == {"city"}
    sampled = client.chat.completions.create(model=LOOKUP, messages=QUOTE, max_tokens=20, temperature=0.8, seed=7)
    again = client.chat.completions.create(model=LOOKUP, messages=QUOTE, max_tokens=20, temperature=0.8, seed=7)
    assert sampled.choices[0].message.content == again.choices[0].message.content


def test_several_choices_are_refused_with_prompt_lookup(client: OpenAI) -> None:
    with pytest.raises(BadRequestError) as info:
        client.chat.completions.create(model=LOOKUP, messages=QUOTE, max_tokens=8, n=2, temperature=0.7)
    error = info.value.body
    assert error["param"] == "n" and "prompt-lookup" in error["message"]
    assert len(client.chat.completions.create(model=PLAIN, messages=QUOTE, max_tokens=8, n=2,
                                              temperature=0.7).choices) == 2
