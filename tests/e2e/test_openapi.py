"""Schemathesis against the real server, on the OpenAPI document the server serves at /openapi.json.

Every operation gets positive cases (valid by the document: with served model ids they reach the models
and their real 200 responses, streams included) and negative ones (invalid in one place: they meet
validation), from three phases: the document's own examples, the coverage phase's boundary and
missing-field cases, and bounded fuzzing. The run is derandomized: the same cases every run, so a
failure is a bug, never luck. No response may be a 5xx, carry a status code the operation does not
document, or break its documented schema (success bodies, each event of a stream, error envelopes).
The server is this module's own, on its own repository: the generated load and unload calls disturb
no other test.

Bounds (about 75 s on a 2-core machine, server start included): MAX_EXAMPLES fuzzed cases per
operation, fewer for the slow ones (SLOW); on positive cases `max_tokens` is capped at MAX_NEW_TOKENS
and `n` at MAX_N, so a generation is a few tokens.
"""

from __future__ import annotations

import copy
import json
import zlib
from pathlib import Path

import pytest
import schemathesis
from schemathesis.checks import not_a_server_error
from schemathesis.core.parameters import ParameterLocation
from schemathesis.specs.openapi.checks import response_schema_conformance, status_code_conformance

from server.api import openapi
from server.api.openapi import build_document
from tests.e2e.harness import ServerProcess, running_server

pytestmark = pytest.mark.timeout(240)

MODELS = {"text_generation": "tiny-chat", "embeddings": "sentence-transformers/minilm", "rerank": "tiny-rerank"}
TASKS = {"completions": "text_generation", "embeddings": "embeddings", "embed": "embeddings", "rerank": "rerank"}
MAX_EXAMPLES = 40
SLOW = {  # operation path regex -> fuzzed cases: each call is a generation, a (re)load or a rescan
    r"completions$": 30,
    r"/repository/models/": 8,
    r"/config/reload$": 4,
}
MAX_NEW_TOKENS = 4
MAX_N = 2
CHECKS = [not_a_server_error, status_code_conformance, response_schema_conformance]
# On a positive case: keep the generated model id, or use a served one (of the operation's task or any).
PICKS = [None, "task", "task", "task", "task", *MODELS.values()]

CONFIG = schemathesis.Config.from_dict({
    "generation": {"mode": "all", "max-examples": MAX_EXAMPLES, "deterministic": True},
    "operations": [{"include-path-regex": regex, "generation": {"max-examples": count}} for regex, count in SLOW.items()],
})


@pytest.fixture(scope="module")
def server(models: Path, tmp_path_factory: pytest.TempPathFactory):
    """This module's own server (generated calls unload its models), as conftest's `server` fixture."""
    root = tmp_path_factory.mktemp("repository")
    with running_server(root, {model_id: models / model_id.rsplit("/", 1)[-1] for model_id in MODELS.values()}) as process:
        yield process


def _with_served_examples(document: dict) -> dict:
    """The document with this repository's model ids in its examples: the examples phase then calls
    every model route and sends every documented request example (streams included) to real models.
    One id has a slash, which schemathesis then also generates (sent as %2F)."""
    document = copy.deepcopy(document)
    parameter = document["components"]["parameters"]["Model"]
    parameter.pop("example", None)
    parameter["examples"] = {task: {"value": model_id} for task, model_id in MODELS.items()}
    served = {openapi.CHAT_MODEL: MODELS["text_generation"], openapi.EMBED_MODEL: MODELS["embeddings"],
              openapi.RERANK_MODEL: MODELS["rerank"]}
    for item in document["paths"].values():
        for operation in item.values():
            media = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
            for example in media.get("examples", {}).values():
                if "model" in example["value"]:
                    example["value"]["model"] = served[example["value"]["model"]]
    return document


# Loaded at import, from the generator the server runs at start-up (schemathesis' lazy from_fixture
# schema fails on pytest 9: it writes the removed Node._nodeid); test_served_document_is_this_one
# checks that the server serves exactly this document.
schema = schemathesis.openapi.from_dict(_with_served_examples(build_document()), config=CONFIG)


def test_served_document_is_this_one(server: ServerProcess) -> None:
    response = server.get("/openapi.json")
    assert response.status_code == 200
    assert response.json() == build_document()


def _task(path: str) -> str | None:
    return next((task for suffix, task in TASKS.items() if path.endswith(suffix)), None)


def _steer(case, pick: str | None) -> None:
    """Positive cases: maybe a served model instead of a random id, and generation kept short."""
    if case.meta.phase.name == "examples":  # the documented examples already name the right models
        pick = None
    model = MODELS.get(_task(case.path), MODELS["embeddings"]) if pick == "task" else pick
    if model is not None and case.path_parameters and "model" in case.path_parameters \
            and not case.meta.is_negative_at(ParameterLocation.PATH):
        case.path_parameters["model"] = model
    body = case.body
    if not isinstance(body, dict) or case.meta.is_negative_at(ParameterLocation.BODY):
        return
    if model is not None and _task(case.path):
        body["model"] = model
    if case.path.endswith("completions"):
        body["max_tokens"] = min(body.get("max_tokens") or MAX_NEW_TOKENS, MAX_NEW_TOKENS)
        if body.get("max_completion_tokens") is not None:  # wins over max_tokens
            body["max_completion_tokens"] = min(body["max_completion_tokens"], MAX_NEW_TOKENS)
        if body.get("n"):
            body["n"] = min(body["n"], MAX_N)


def _pick(case) -> str | None:
    """A choice from PICKS that follows from the case itself (`schema.given` cannot be combined with the
    examples phase): the same cases make the same choices every run."""
    seen = json.dumps([case.path, case.path_parameters, case.body], sort_keys=True, default=repr)
    return PICKS[zlib.crc32(seen.encode("utf-8", "surrogatepass")) % len(PICKS)]


@schema.parametrize()
def test_every_operation_conforms(case, server: ServerProcess) -> None:
    _steer(case, _pick(case))
    case.call_and_validate(base_url=server.base_url, checks=CHECKS, timeout=120)
