"""The agent and RAG frameworks people build on, against the real server: LangChain's ChatOpenAI
(bind_tools, with_structured_output by function calling) and OpenAIEmbeddings, LlamaIndex's OpenAILike
(structured_predict, predict_and_call, a FunctionAgent loop) and OpenAILikeEmbedding."""

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
TOOLS_MODEL = "tiny-tools"  # answers a get_weather call in the Hermes format when tools are offered
EMBED = "minilm"


@pytest.fixture(scope="module")
def base_url(wide_tiny_chat: Path, models: Path, tmp_path_factory: pytest.TempPathFactory):
    with running_server(tmp_path_factory.mktemp("repository"), {CHAT: wide_tiny_chat, EMBED: models / "minilm",
                                                                   TOOLS_MODEL: models / TOOLS_MODEL}) as server:
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


def llama_llm(base_url: str, model: str):
    from llama_index.llms.openai_like import OpenAILike

    return OpenAILike(model=model, api_base=base_url, api_key="unused", is_chat_model=True,
                      is_function_calling_model=True, max_tokens=200, max_retries=0, context_window=4096)


def get_time() -> str:
    """The current time."""
    return "12:00"


def get_weather(city: str) -> str:
    """Current weather in a city."""
    return f"sunny, 21 C in {city}"


def test_llama_index_structured_predict(base_url: str) -> None:
    from llama_index.core.prompts import PromptTemplate

    result = llama_llm(base_url, CHAT).structured_predict(GetWeather, PromptTemplate("Weather in {city}?"), city="Rome")
    assert isinstance(result, GetWeather)


def test_llama_index_predict_and_call_runs_the_models_call(base_url: str) -> None:
    from llama_index.core.tools import FunctionTool

    tools = [FunctionTool.from_defaults(fn=get_time), FunctionTool.from_defaults(fn=get_weather)]
    response = llama_llm(base_url, TOOLS_MODEL).predict_and_call(tools, "What is the weather in Paris?")
    assert str(response) == "sunny, 21 C in Paris"
    (source,) = response.sources
    assert source.tool_name == "get_weather" and source.raw_input["kwargs"] == {"city": "Paris"}


def test_llama_index_function_agent_loop(base_url: str) -> None:
    """Call, tool result fed back, final answer: the agent workflow LlamaIndex users build on."""
    import asyncio

    from llama_index.core.agent.workflow import FunctionAgent, ToolCallResult

    agent = FunctionAgent(tools=[get_time, get_weather], llm=llama_llm(base_url, TOOLS_MODEL))

    async def run():
        handler = agent.run("What is the weather in Paris?")
        results = [event async for event in handler.stream_events() if isinstance(event, ToolCallResult)]
        return results, await handler

    results, answer = asyncio.run(run())
    assert [(result.tool_name, result.tool_kwargs) for result in results] == [("get_weather", {"city": "Paris"})]
    assert str(answer) == "It is sunny."
