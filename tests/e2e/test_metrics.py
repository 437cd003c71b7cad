"""GET /metrics on the real server: generation latency histograms, token counters that match the usage the
responses report, engine gauges, batcher histograms and rejections by reason.

The server updates every figure checked here before the response completes (the engine observes a
sequence's last token before handing it to its request), so no test waits except for the worker's idle
report, polled with wait_for.
"""

from __future__ import annotations

import http.client

import pytest
from openai import OpenAI
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.harness import ServerProcess, wait_for

CHAT = {"model": "tiny-chat", "version": "1"}
EMBED = {"model": "sentence-transformers/minilm:1"}  # the batcher's label: "<model id>:<version>"
HI = [{"role": "user", "content": "hi"}]
CHAT_ROUTE = "v3/chat/completions"


class Scrape:
    """One /metrics exposition, parsed: sample name + labels -> value."""

    def __init__(self, server: ServerProcess) -> None:
        response = server.get("/metrics")
        response.raise_for_status()
        self.values: dict[tuple[str, frozenset], float] = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                self.values[(sample.name, frozenset(sample.labels.items()))] = sample.value

    def get(self, name: str, labels: dict[str, str]) -> float:
        return self.values.get((name, frozenset(labels.items())), 0.0)

    def has(self, name: str, labels: dict[str, str]) -> bool:
        return (name, frozenset(labels.items())) in self.values


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> OpenAI:
    return OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)


def test_generation_latencies_tokens_and_engine_gauges(server: ServerProcess, client: OpenAI) -> None:
    before = Scrape(server)
    unary = client.chat.completions.create(model="tiny-chat", messages=HI)
    stream = client.chat.completions.create(model="tiny-chat", messages=[{"role": "user", "content": "hello"}],
                                            stream=True, stream_options={"include_usage": True})
    usages = [unary.usage] + [chunk.usage for chunk in stream if chunk.usage is not None]
    assert len(usages) == 2
    after = Scrape(server)

    def delta(name: str) -> float:
        return after.get(name, CHAT) - before.get(name, CHAT)

    assert delta("ovms_prompt_tokens_total") == sum(u.prompt_tokens for u in usages)
    assert delta("ovms_generated_tokens_total") == sum(u.completion_tokens for u in usages)
    assert delta("ovms_time_to_first_token_seconds_count") == 2
    assert delta("ovms_e2e_request_latency_seconds_count") == 2
    assert delta("ovms_time_per_output_token_seconds_count") == 2  # both replies have several tokens
    # one output per engine step and sequence: every token after the first follows an inter-token gap
    assert delta("ovms_inter_token_latency_seconds_count") == sum(u.completion_tokens - 1 for u in usages)
    assert 0 < delta("ovms_time_to_first_token_seconds_sum") <= delta("ovms_e2e_request_latency_seconds_sum")
    # the worker times its steps: at least one per token (one request at a time here), and the time between
    # two steps of a busy period (every step but the first of each period)
    steps = delta("ovms_engine_step_duration_seconds_count")
    assert steps >= sum(u.completion_tokens for u in usages)
    assert sum(u.completion_tokens - 1 for u in usages) <= delta("ovms_engine_step_gap_seconds_count") < steps
    assert delta("ovms_engine_step_duration_seconds_sum") > 0 and delta("ovms_engine_step_gap_seconds_sum") > 0
    # each request waited for the engine once, from the server's hand-off to the worker adding it
    assert delta("ovms_engine_request_wait_seconds_count") == 2
    assert 0 < delta("ovms_engine_request_wait_seconds_sum") < delta("ovms_time_to_first_token_seconds_sum")

    for gauge in ("ovms_num_requests_running", "ovms_num_requests_waiting", "ovms_generation_requests_active"):
        assert after.get(gauge, CHAT) == 0, gauge
    # the pipeline's own figures came with the worker's step messages
    assert after.get("ovms_kv_cache_size_bytes", CHAT) > 0
    assert 0 < after.get("ovms_kv_cache_max_usage_perc", CHAT) <= 1
    assert after.has("ovms_kv_cache_usage_perc", CHAT)
    # once idle, the worker frees the finished requests' blocks with one empty step and says so
    wait_for(lambda: Scrape(server).get("ovms_kv_cache_usage_perc", CHAT) == 0, timeout=10,
             what="KV cache usage back to 0 once idle")
    idle = Scrape(server)
    assert idle.get("ovms_engine_requests", CHAT) == 0 and idle.get("ovms_engine_scheduled_requests", CHAT) == 0


def test_completions_are_measured_too(server: ServerProcess, client: OpenAI) -> None:
    before = Scrape(server)
    response = client.completions.create(model="tiny-chat", prompt="once upon a time", max_tokens=4)
    after = Scrape(server)
    assert after.get("ovms_time_to_first_token_seconds_count", CHAT) - before.get(
        "ovms_time_to_first_token_seconds_count", CHAT) == 1
    assert after.get("ovms_prompt_tokens_total", CHAT) - before.get(
        "ovms_prompt_tokens_total", CHAT) == response.usage.prompt_tokens
    assert after.get("ovms_generated_tokens_total", CHAT) - before.get(
        "ovms_generated_tokens_total", CHAT) == response.usage.completion_tokens


def test_embeddings_batch_size_and_queue_wait(server: ServerProcess, client: OpenAI) -> None:
    before = Scrape(server)
    response = client.embeddings.create(model="sentence-transformers/minilm", input=["one", "two", "three"])
    assert len(response.data) == 3
    after = Scrape(server)
    batches = after.get("ovms_batch_size_count", EMBED) - before.get("ovms_batch_size_count", EMBED)
    assert batches >= 1
    assert after.get("ovms_batch_size_sum", EMBED) - before.get("ovms_batch_size_sum", EMBED) == 3
    # one queue-wait observation per input
    assert after.get("ovms_batch_queue_wait_seconds_count", EMBED) - before.get(
        "ovms_batch_queue_wait_seconds_count", EMBED) == 3


def test_rejections_are_counted_by_route_and_reason(server: ServerProcess) -> None:
    refusals = [
        ({"model": "tiny-chat", "messages": HI, "temperature": "hot"}, 400, "400"),  # schema: wrong type
        ({"model": "tiny-chat", "messages": HI, "logit_bias": {"1": 5}}, 400, "unsupported_parameter"),
        ({"model": "no-such-model", "messages": HI}, 404, "model_not_found"),
    ]
    before = Scrape(server)
    for body, status, _ in refusals:
        assert server.post("/v3/chat/completions", json=body).status_code == status
    assert server.get("/v3/no/such/route").status_code == 404
    after = Scrape(server)

    def delta(route: str, reason: str) -> float:
        labels = {"route": route, "reason": reason}
        return after.get("ovms_requests_rejected_total", labels) - before.get("ovms_requests_rejected_total", labels)

    for _, _, reason in refusals:
        assert delta(CHAT_ROUTE, reason) == 1, reason
    assert delta("unmatched", "404") == 1  # no route matched: Sanic's own 404 goes through the same handler


def test_a_body_over_the_limit_is_counted_as_413(server: ServerProcess) -> None:
    def too_large() -> float:
        return sum(value for (name, labels), value in Scrape(server).values.items()
                   if name == "ovms_requests_rejected_total" and ("reason", "413") in labels)

    before = too_large()
    connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:  # the headers alone: the server answers from the Content-Length
        connection.putrequest("POST", "/v3/embeddings")
        connection.putheader("Content-Type", "application/json")
        connection.putheader("Content-Length", str(16 * 1024 * 1024 + 1))
        connection.endheaders()
        response = connection.getresponse()
        assert response.status == 413, response.read()[:200]
    finally:
        connection.close()
    assert too_large() - before == 1


def test_invented_http_methods_do_not_become_label_values(server: ServerProcess) -> None:
    """Sanic runs any method token a client sends (FOO1 /x gets a 405 or 404): as a label, each would
    add series to /metrics for good. Methods outside the standard set are counted as "other"."""
    for index in range(5):
        connection = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        try:
            connection.putrequest(f"FOO{index}", "/v3/models")
            connection.endheaders()
            assert connection.getresponse().status in (404, 405)
        finally:
            connection.close()
    methods = {dict(labels).get("method") for (name, labels) in Scrape(server).values
               if name.startswith("ovms_http_request")}
    assert "other" in methods
    assert not any(method and method.startswith("FOO") for method in methods), methods
