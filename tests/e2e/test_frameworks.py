"""The agent and RAG frameworks people build on, against the real server: LangChain's ChatOpenAI
(bind_tools, with_structured_output by function calling) and OpenAIEmbeddings, LlamaIndex's
OpenAILikeEmbedding."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal

import numpy as np
import pydantic
import pytest
from langchain_openai import ChatOpenAI, OpenAIEmbeddings
from llama_index.embeddings.openai_like import OpenAILikeEmbedding

from tests.e2e.harness import running_server

CHAT = "tiny-chat"
EMBED = "minilm"


@pytest.fixture(scope="module")
def base_url(wide_tiny_chat: Path, models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_server(tmp_path_factory.mktemp("repository"), {CHAT: wide_tiny_chat, EMBED: models / "minilm"}) as server:
        yield server.url("/v3")


class GetWeather(pydantic.BaseModel):
    """Current weather in a city."""

    city: Literal["Paris", "Rome"]
    unit: Literal["C", "F"]


def chat(base_url: str) -> ChatOpenAI:
    return ChatOpenAI(model=CHAT, base_url=base_url, api_key="unused", max_retries=0, max_tokens=200)


def test_langchain_bind_tools(base_url: str) -> None:
    message = chat(base_url).bind_tools([GetWeather], tool_choice="required",
                                        parallel_tool_calls=False).invoke("Weather in Rome?")
    assert len(message.tool_calls) == 1
    call = message.tool_calls[0]
    assert call["name"] == "GetWeather" and call["id"].startswith("call_")
    GetWeather(**call["args"])


def test_langchain_structured_output_by_function_calling(base_url: str) -> None:
    result = chat(base_url).with_structured_output(GetWeather, method="function_calling").invoke("Weather in Rome?")
    assert isinstance(result, GetWeather)


def test_langchain_tool_loop(base_url: str) -> None:
    from langchain_core.messages import HumanMessage, ToolMessage

    model = chat(base_url).bind_tools([GetWeather], tool_choice="required", parallel_tool_calls=False)
    first = model.invoke([HumanMessage("Weather in Rome?")])
    answer = chat(base_url).bind_tools([GetWeather]).invoke(
        [HumanMessage("Weather in Rome?"), first,
         ToolMessage(json.dumps({"temperature": 21}), tool_call_id=first.tool_calls[0]["id"])])
    assert answer.content == "Hello! I am a tiny test model." and not answer.tool_calls


def test_embeddings_frameworks_send_text(base_url: str) -> None:
    from openai import OpenAI

    direct = OpenAI(base_url=base_url, api_key="unused").embeddings.create(
        model=EMBED, input=["hello world"], encoding_format="float").data[0].embedding
    langchain = OpenAIEmbeddings(model=EMBED, base_url=base_url, api_key="unused",
                                 check_embedding_ctx_length=False).embed_documents(["hello world"])[0]
    llama = OpenAILikeEmbedding(model_name=EMBED, api_base=base_url, api_key="unused").get_text_embedding("hello world")
    assert np.allclose(langchain, direct, atol=1e-5) and np.allclose(llama, direct, atol=1e-5)
