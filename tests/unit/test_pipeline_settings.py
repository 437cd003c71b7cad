"""The typed pipeline settings: they mirror the schema's task sections, the config layer builds them (and
the effective config.json round-trips), the loader fills what config.json left to the server's flags, and
the engines (server.pipelines) never import the model repository."""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
import subprocess
import sys
import typing
from pathlib import Path

import pytest

from server.pipelines.loader import with_server_defaults
from server.pipelines.settings import (
    EmbeddingSettings, GenerationSettings, PipelineSpec, RerankSettings, SETTINGS_TYPES,
)
from server.repository import config
from server.settings import model_defaults

ROOT = Path(__file__).resolve().parents[2]
PIPELINES = ROOT / "server" / "pipelines"
SCHEMA_TYPES = {"integer": int, "number": float, "boolean": bool}


@pytest.mark.parametrize("task", sorted(SETTINGS_TYPES))
def test_settings_fields_mirror_the_schema_section(task: str) -> None:
    section = config.schema()["properties"][task]["properties"]
    cls = SETTINGS_TYPES[task]
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    assert list(fields) == list(section)
    for name, spec in section.items():
        kind = str if "enum" in spec else SCHEMA_TYPES[spec["type"]]
        if "default" in spec:
            assert fields[name].default == spec["default"], name
            assert hints[name] is kind, name
        else:  # unset: None, for the server's flags to fill
            assert fields[name].default is None, name
            assert hints[name] == typing.Optional[kind], name


DOCUMENTS = {
    "text_generation": {
        "task": "text_generation", "device": "GPU", "plugin_config": {"KV_CACHE_PRECISION": "f16"},
        "model_version_policy": {"specific": {"versions": [1, 3]}}, "drain_timeout_s": 5, "request_timeout_s": 2.5,
        "text_generation": {"max_num_seqs": 4, "cache_size": 1.5, "max_context_length": 1024,
                            "max_queued_requests": 0, "stall_timeout_s": 30, "schema_probe": False},
    },
    "embeddings": {
        "task": "embeddings", "model_version_policy": {"all": {}},
        "embeddings": {"pooling": "mean", "truncate": True, "batch_wait_ms": 2, "max_queued_items": 10},
    },
    "rerank": {
        "task": "rerank", "plugin_config": {"PERFORMANCE_HINT": "LATENCY", "NUM_STREAMS": 1, "X": True},
        "rerank": {"scoring": "embeddings_cosine", "max_documents": 5},
    },
}


@pytest.mark.parametrize("task", sorted(SETTINGS_TYPES))
@pytest.mark.parametrize("full", [False, True], ids=["minimal", "customized"])
def test_the_effective_document_round_trips(task: str, full: bool) -> None:
    built = config.build(DOCUMENTS[task] if full else {"task": task})
    document = built.document()
    assert config.validate(document) == []
    assert config.build(json.loads(json.dumps(document))) == built
    assert config.build(document).pipeline_hash == built.pipeline_hash
    # every field the schema knows, defaults filled in (only the default-less ones may be absent)
    props = config.schema()["properties"]
    assert set(props) - set(document) <= {"request_timeout_s"} | set(SETTINGS_TYPES) - {task}
    section = props[task]["properties"]
    assert {name for name in section if "default" in section[name]} <= set(document[task])
    if full:
        original = DOCUMENTS[task]
        assert {k: v for k, v in document.items() if k in original and k != task} == {
            k: v for k, v in original.items() if k != task}
        assert document[task].items() >= original[task].items()


def test_inferred_configs_round_trip_with_their_flag() -> None:
    built = config.build({"task": "rerank"}, inferred=True)
    assert config.build(built.document(), inferred=True) == built


def test_config_builds_the_pipeline_spec() -> None:
    built = config.build(DOCUMENTS["text_generation"])
    spec = built.pipeline
    assert (built.task, spec.task, spec.device, dict(spec.plugin_config)) == (
        "text_generation", "text_generation", "GPU", {"KV_CACHE_PRECISION": "f16"})
    assert spec.settings == GenerationSettings(max_num_seqs=4, cache_size=1.5, max_context_length=1024,
                                               max_queued_requests=0, stall_timeout_s=30, schema_probe=False)
    assert (built.drain_timeout_s, built.request_timeout_s) == (5.0, 2.5)
    assert config.build({"task": "embeddings"}).pipeline.settings == EmbeddingSettings()
    assert config.build({"task": "rerank"}).pipeline.settings == RerankSettings()


def test_server_defaults_fill_only_what_config_json_left_unset() -> None:
    defaults = model_defaults(max_queued_requests=7, stall_timeout_s=9.0, max_queued_items=11)
    unset = with_server_defaults(config.build({"task": "text_generation"}).pipeline, defaults)
    assert (unset.settings.max_queued_requests, unset.settings.stall_timeout_s) == (7, 9.0)
    given = with_server_defaults(config.build(DOCUMENTS["text_generation"]).pipeline, defaults)
    assert (given.settings.max_queued_requests, given.settings.stall_timeout_s) == (0, 30)
    assert given.settings.max_context_length == 1024 and given.device == "GPU"
    for task in ("embeddings", "rerank"):
        assert with_server_defaults(config.build({"task": task}).pipeline, defaults).settings.max_queued_items == 11
    set_items = with_server_defaults(config.build(DOCUMENTS["embeddings"]).pipeline, defaults)
    assert set_items.settings.max_queued_items == 10
    assert with_server_defaults(config.build({"task": "rerank"}).pipeline, {}).settings.max_queued_items is None


def test_spec_checks_its_settings_and_sections_reject_unknown_keys() -> None:
    with pytest.raises(TypeError):
        PipelineSpec(task="rerank", settings=EmbeddingSettings())
    with pytest.raises(ValueError):
        PipelineSpec(task="chat", settings=EmbeddingSettings())
    with pytest.raises(ValueError, match="tsak"):
        RerankSettings.from_mapping({"tsak": 1})
    spec = PipelineSpec.from_mapping("embeddings", {"pooling": "mean"}, plugin_config={"A": "b"})
    assert spec.settings == EmbeddingSettings(pooling="mean") and spec.device == "CPU"
    assert pickle.loads(pickle.dumps(spec)) == spec  # what a worker process could be sent
    assert EmbeddingSettings().to_mapping() == {k: v for k, v in dataclasses.asdict(EmbeddingSettings()).items()
                                                if k != "max_queued_items"}


def test_pipelines_do_not_import_the_repository() -> None:
    script = (
        "import importlib, pkgutil, sys\n"
        "import server.pipelines as package\n"
        "names = [m.name for m in pkgutil.walk_packages(package.__path__, package.__name__ + '.')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "leaked = sorted(m for m in sys.modules if m == 'server.repository' or m.startswith('server.repository.'))\n"
        "print(len(names), ','.join(leaked))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    count, leaked = result.stdout.split()[0], result.stdout.strip().partition(" ")[2]
    assert int(count) >= len(list(PIPELINES.glob("*.py"))) - 1  # every module but __init__ was imported
    assert leaked == ""


def test_no_pipelines_source_mentions_the_repository() -> None:
    pattern = re.compile(r"server\s*[./]\s*repository|from\s+server\s+import\s+[^\n]*\brepository\b")
    offenders = [str(p.relative_to(ROOT)) for p in sorted(PIPELINES.rglob("*.py")) if pattern.search(p.read_text())]
    assert offenders == []
