"""config.json parsing and validation against schemas/model_config.schema.json."""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import jsonschema

from server.pipelines.settings import PipelineSpec

SCHEMA_PATH = Path(__file__).resolve().parents[2] / "schemas" / "model_config.schema.json"


@dataclass(frozen=True)
class ConfigProblem:
    """One validation problem: where (JSON pointer) and what."""

    pointer: str
    message: str

    def __str__(self) -> str:
        return f"{self.pointer or '/'}: {self.message}"


class ConfigError(Exception):
    def __init__(self, problems: list[ConfigProblem]) -> None:
        super().__init__("; ".join(str(p) for p in problems))
        self.problems = problems


@dataclass(frozen=True)
class ModelConfig:
    version_policy: dict[str, Any]
    # What the engines get: task, device, plugin_config and the task's section, schema defaults filled in.
    pipeline: PipelineSpec
    drain_timeout_s: float = 300.0
    request_timeout_s: float | None = None  # None: the server's --request-timeout
    inferred: bool = False

    @property
    def task(self) -> str:
        return self.pipeline.task

    @property
    def pipeline_hash(self) -> str:
        """Identifies the settings a loaded pipeline depends on: a change reloads, a policy-only change does not."""
        spec = self.pipeline
        part = {"task": spec.task, "device": spec.device, "plugin_config": dict(spec.plugin_config),
                "settings": spec.settings.to_mapping()}
        return hashlib.sha256(json.dumps(part, sort_keys=True).encode()).hexdigest()[:16]

    def document(self) -> dict[str, Any]:
        """The effective config.json: every field, schema defaults filled in; build(document()) == self
        (with the same `inferred`)."""
        document: dict[str, Any] = {
            "task": self.task,
            "model_version_policy": copy.deepcopy(self.version_policy),
            "device": self.pipeline.device,
            "plugin_config": dict(self.pipeline.plugin_config),
            "drain_timeout_s": self.drain_timeout_s,
        }
        if self.request_timeout_s is not None:  # no schema default: absent means the server's flag
            document["request_timeout_s"] = self.request_timeout_s
        document[self.task] = self.pipeline.settings.to_mapping()
        return document


@lru_cache(maxsize=1)
def _validator() -> jsonschema.Draft202012Validator:
    schema = json.loads(SCHEMA_PATH.read_text())
    return jsonschema.Draft202012Validator(schema)


@lru_cache(maxsize=1)
def schema() -> dict[str, Any]:
    return _validator().schema


def _pointer(path: Any) -> str:
    return "".join(f"/{part}" for part in path)


def _problem(error: jsonschema.ValidationError) -> ConfigProblem:
    # oneOf errors are vague ("not valid under any of the given schemas"): report the branch that
    # matched deepest, i.e. the one the author evidently meant.
    while error.context:
        depth = max(len(e.absolute_path) for e in error.context)
        error = jsonschema.exceptions.best_match(e for e in error.context if len(e.absolute_path) == depth)
    schema_path = list(error.absolute_schema_path)
    if schema_path and schema_path[0] == "dependentSchemas":
        section = schema_path[1]
        return ConfigProblem("/task", f"a '{section}' section needs task '{section}'")
    return ConfigProblem(_pointer(error.absolute_path), error.message)


MAX_DEPTH = 32  # no valid config.json nests past a few levels; the validator (and its messages) recurse


def _depth_exceeds(document: Any, limit: int) -> bool:
    stack = [(document, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, (dict, list)):
            if depth > limit:
                return True
            stack.extend((child, depth + 1) for child in (node.values() if isinstance(node, dict) else node))
    return False


def validate(document: Any) -> list[ConfigProblem]:
    """All problems of a parsed config.json, sorted by pointer; empty when valid."""
    if _depth_exceeds(document, MAX_DEPTH):  # checked without recursion, before the validator recurses
        return [ConfigProblem("", f"config.json nests more than {MAX_DEPTH} levels deep")]
    problems = [_problem(e) for e in _validator().iter_errors(document)]
    return sorted(problems, key=lambda p: p.pointer)


def _section_defaults(task: str) -> dict[str, Any]:
    props = schema()["properties"][task]["properties"]
    return {name: spec["default"] for name, spec in props.items() if "default" in spec}


def build(document: dict[str, Any], *, inferred: bool = False) -> ModelConfig:
    """A ModelConfig from a valid document, with schema defaults applied."""
    problems = validate(document)
    if problems:
        raise ConfigError(problems)
    props = schema()["properties"]
    task = document["task"]
    pipeline = PipelineSpec.from_mapping(
        task, _section_defaults(task) | document.get(task, {}),
        device=document.get("device", props["device"]["default"]),
        plugin_config=document.get("plugin_config", props["plugin_config"]["default"]),
    )
    return ModelConfig(
        version_policy=copy.deepcopy(document.get("model_version_policy", props["model_version_policy"]["default"])),
        pipeline=pipeline,
        drain_timeout_s=float(document.get("drain_timeout_s", props["drain_timeout_s"]["default"])),
        request_timeout_s=document.get("request_timeout_s"),
        inferred=inferred,
    )


def parse(raw: bytes) -> ModelConfig:
    """Parse config.json bytes; raise ConfigError naming the JSON pointer of every problem."""
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigError([ConfigProblem("", "config.json is not UTF-8 text")]) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            [ConfigProblem("", f"config.json is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}")]
        ) from None
    except RecursionError:
        raise ConfigError([ConfigProblem("", "config.json is nested too deeply to read")]) from None
    except ValueError:  # Python's bound on integer digits (4300): a plain ValueError, not a decode error
        raise ConfigError([ConfigProblem("", "config.json holds an integer with too many digits")]) from None
    return build(document)
