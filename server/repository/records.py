"""The manager's records: what serves, what each version reports, and the read-only views of them.

A VersionStatus is an immutable snapshot: a transition replaces it, so code that remembers a snapshot
can tell whether anyone changed the state since (a drain or an overtaken load then leaves it alone).
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from server.errors import BadRequest, ModelNotFound
from server.pipelines.base import LoadedModel, ModelMetadata
from server.repository import config as model_config
from server.repository.scan import ModelEntry
from server.repository.states import ErrorCode, VersionState

MAX_MODEL_ID_CHARS = 256
MAX_NAME_BYTES = 255  # NAME_MAX: no folder of the repository can have a longer name


@dataclass(frozen=True)
class VersionStatus:
    """What the status APIs show for one version number."""

    state: VersionState = VersionState.START
    error_code: ErrorCode = ErrorCode.OK
    error_message: str = ""
    reason: str = ""
    since: float = field(default_factory=time.monotonic)


@dataclass(eq=False)
class Instance:
    """One loaded pipeline of one version; requests hold a lease on it while they run."""

    model_id: str
    version: int
    model: LoadedModel
    fingerprint: tuple
    config: model_config.ModelConfig
    created: int = field(default_factory=lambda: int(time.time()))
    inflight: int = 0
    idle: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        self.idle.set()

    @property
    def task(self) -> str:
        return self.config.task

    @property
    def metadata(self) -> ModelMetadata:
        return self.model.metadata

    @property
    def broken(self) -> str | None:
        """Why this pipeline can no longer serve (a generation worker died), else None."""
        return getattr(self.model, "broken", None)


@dataclass(eq=False)
class ModelRecord:
    model_id: str
    path: Path
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    desired: ModelEntry | None = None  # newest entry seen on disk
    stamp: int = 0  # bumped on every change; a load started under an older stamp is discarded
    applied_stamp: int = 0
    instances: dict[int, Instance] = field(default_factory=dict)  # versions that take requests
    status: dict[int, VersionStatus] = field(default_factory=dict)
    pending: dict[int, str] = field(default_factory=dict)  # reloads of serving versions being built aside
    draining: dict[int, VersionStatus] = field(default_factory=dict)  # UNLOADING snapshots whose drain runs
    task: str | None = None
    config_error: str | None = None  # config.json rejected while older settings keep serving
    model_error: tuple[ErrorCode, str] | None = None  # nothing can be served, and why
    config_override: dict | None = None  # a config.json given by an explicit load, used instead of the file
    unloaded_by_request: bool = False
    # Versions retired because their pipeline broke: loaded again at the next convergence even if the
    # policy does not select them, as long as a selected version is not serving (they were kept for it).
    broken_versions: set[int] = field(default_factory=set)
    explicit_busy: bool = False  # an explicit load/unload call is running


@dataclass(frozen=True)
class VersionView:
    version: int
    state: VersionState
    error_code: str
    error_message: str
    reason: str
    pending: str = ""  # work under way on a serving version ("" when none), e.g. a reload built aside


@dataclass(frozen=True)
class ModelView:
    model_id: str
    task: str | None
    versions: tuple[VersionView, ...]
    error: str | None
    created: int | None = None  # when the newest serving instance was loaded (unix seconds)

    @property
    def available_versions(self) -> list[int]:
        return [v.version for v in self.versions if v.state is VersionState.AVAILABLE]


def view_of(record: ModelRecord) -> ModelView:
    """A read-only picture of a record: no side effects, whatever state the pipelines are in."""
    versions = []
    for number in sorted(record.status):
        status = record.status[number]
        code, message = status.error_code.value, status.error_message
        if record.config_error and status.state is VersionState.AVAILABLE:
            code = ErrorCode.INVALID_ARGUMENT.value
            message = f"still serving the previous configuration; {record.config_error}"
        versions.append(VersionView(number, status.state, code, message, status.reason, record.pending.get(number, "")))
    error = record.model_error[1] if record.model_error else record.config_error
    if record.unloaded_by_request and not error:
        error = "unloaded by request"
    created = record.instances[max(record.instances)].created if record.instances else None
    return ModelView(record.model_id, record.task, tuple(versions), error, created)


def not_serving_reason(record: ModelRecord) -> str:
    """Why a model with no serving version cannot take a request, for the 503 a client gets: the model's
    error, a reload under way, a load under way, or else the failure of its newest version."""
    error = view_of(record).error
    if error:
        return error
    if record.instances:
        return "reloading"
    if any(status.state in (VersionState.START, VersionState.LOADING) for status in record.status.values()):
        return "loading"
    failed = [n for n, status in record.status.items() if status.error_message]
    return record.status[max(failed)].error_message if failed else "loading"  # the loader's message names it


def validate_model_id(model_id: str) -> str:
    """The canonical id, or an error: ids that could leave the repository (.., absolute, backslashes,
    hidden parts), other spellings of an id (`./x`, `a//b`, `x/`), and ids too long to be one (never
    echoed back: a 1 MB id must not come back in the error body)."""
    if len(model_id) > MAX_MODEL_ID_CHARS:
        raise BadRequest(f"The model id is {len(model_id)} characters long; ids have at most {MAX_MODEL_ID_CHARS}",
                         param="model")
    if not _is_canonical(model_id):
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
    return model_id


@functools.lru_cache(maxsize=1024)  # every request checks its id: 4 us (half in PurePosixPath), 0.2 us cached
def _is_canonical(model_id: str) -> bool:
    parts = model_id.split("/")
    return not (
        not model_id
        or "\\" in model_id
        or "\x00" in model_id
        or any(not part or part.startswith(".") for part in parts)  # "", ".", "..", hidden: a//b, ./x, x/
        or any(len(part.encode("utf-8", "surrogatepass")) > MAX_NAME_BYTES for part in parts)
        or PurePosixPath(model_id).as_posix() != model_id
    )
