"""Model lifecycle: keeps the served model versions in step with repository snapshots.

Rules (see README "Repository semantics"):
- one asyncio.Lock per model: changes to one model apply in order, models load in parallel;
- load-then-swap: a new instance is fully loaded before the one it replaces is retired, and a
  retired instance drains its in-flight requests before it is released;
- a stamp per model: a load overtaken by a newer change of the same model is discarded;
- a bad config or a failed load never takes down what is serving;
- blocking OpenVINO work (compile, release, IR reads, scans) runs in a thread pool.
"""

from __future__ import annotations

import asyncio
import gc
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path, PurePosixPath
from typing import Any, AsyncIterator, Callable, Iterable

import structlog

from server import metrics
from server.errors import BadRequest, Conflict, ModelNotFound, ModelNotReady
from server.pipelines.base import LoadedModel, ModelLoader, ModelLoadError, ModelMetadata
from server.repository import config as model_config
from server.repository.policy import select_versions
from server.repository.scan import ModelEntry, Snapshot, VersionEntry, diff, scan, scan_model
from server.repository.states import ErrorCode, VersionState

log = structlog.get_logger("server.repository")


@dataclass
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
    task: str | None = None
    config_error: str | None = None  # config.json rejected while older settings keep serving
    model_error: tuple[ErrorCode, str] | None = None  # nothing can be served, and why
    unloaded_by_request: bool = False
    explicit_busy: bool = False  # an explicit load/unload call is running


@dataclass(frozen=True)
class VersionView:
    version: int
    state: VersionState
    error_code: str
    error_message: str
    reason: str


@dataclass(frozen=True)
class ModelView:
    model_id: str
    task: str | None
    versions: tuple[VersionView, ...]
    error: str | None

    @property
    def available_versions(self) -> list[int]:
        return [v.version for v in self.versions if v.state is VersionState.AVAILABLE]


MAX_MODEL_ID_CHARS = 256


def validate_model_id(model_id: str) -> str:
    """Reject ids that could leave the repository (.., absolute, backslashes, hidden parts), and ids too
    long to be one (never echoed back: a 1 MB id must not come back in the error body)."""
    if len(model_id) > MAX_MODEL_ID_CHARS:
        raise BadRequest(f"The model id is {len(model_id)} characters long; ids have at most {MAX_MODEL_ID_CHARS}",
                         param="model")
    parts = PurePosixPath(model_id).parts
    if (
        not model_id
        or model_id.startswith("/")
        or "\\" in model_id
        or "\x00" in model_id
        or any(part in (".", "..") or part.startswith(".") for part in parts)
    ):
        raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
    return "/".join(parts)


class ModelManager:
    def __init__(self, root: Path, loader: ModelLoader, *, load_workers: int = 2) -> None:
        self.root = Path(root).resolve()
        self._loader = loader
        self._executor = ThreadPoolExecutor(load_workers, thread_name_prefix="model-io")
        self._models: dict[str, ModelRecord] = {}
        self._snapshot: Snapshot | None = None
        self._scan_lock = asyncio.Lock()
        self._background: set[asyncio.Task] = set()
        self.ready = False  # the first scan's loads have finished

    # ---------------------------------------------------------------- repository changes

    async def rescan(self, *, wait: bool = True) -> None:
        """Scan the repository and apply every change. With wait, return once the resulting loads
        finished; the watcher does not wait, so that a newer change can overtake a slow load."""
        async with self._scan_lock:
            for record in list(self._models.values()):
                self._repair_broken(record)
            snapshot = await self._blocking(scan, self.root)
            changes = diff(self._snapshot, snapshot)
            self._snapshot = snapshot
            for warning in snapshot.warnings:
                log.warning("repository_warning", message=warning)
            tasks = [self._schedule(model_id, snapshot.models.get(model_id)) for model_id in sorted(changes.changed)]
        if tasks and wait:
            await asyncio.gather(*tasks)

    async def initial_load(self) -> None:
        await self.rescan()
        self.ready = True
        log.info("repository_ready", models=len(self._visible()))

    def _schedule(self, model_id: str, entry: ModelEntry | None) -> asyncio.Task:
        record = self._models.get(model_id)
        if record is None:
            record = self._models[model_id] = ModelRecord(model_id, self.root / model_id)
        if entry is not None:
            for warning in entry.warnings:
                log.warning("repository_warning", model=model_id, message=warning)
        record.desired = entry
        record.stamp += 1
        return self._spawn(self._reconcile(record))

    async def _reconcile(self, record: ModelRecord) -> None:
        async with record.lock:
            if record.applied_stamp == record.stamp or self._models.get(record.model_id) is not record:
                return  # a later task already applied the newest entry
            record.applied_stamp = stamp = record.stamp
            try:
                await self._converge(record, record.desired, stamp)
            except Exception:  # a bug here must not stop the watcher; the next change retries
                log.exception("reconcile_failed", model=record.model_id)

    async def _converge(self, record: ModelRecord, entry: ModelEntry | None, stamp: int, *, force: bool = False) -> None:
        """Make what `record` serves match `entry`. Called with record.lock held."""
        if entry is None:
            for instance in list(record.instances.values()):
                self._retire(record, instance, "model folder removed", forget=True)
            if record.stamp == stamp:
                self._models.pop(record.model_id, None)
                log.info("model_removed", model=record.model_id)
            return
        if record.unloaded_by_request and not force:
            return  # pinned by an explicit unload until an explicit load

        for number in list(record.status):  # forget version folders that are gone and not serving
            if number not in entry.versions and number not in record.instances:
                self._forget_status(record, number)

        config, problem = await self._resolve_config(entry)
        if problem is not None:
            self._retire_deleted_versions(record, entry)
            self._report_problem(record, entry, *problem)
            return
        record.task = config.task
        record.config_error = None

        targets = select_versions(config.version_policy, entry.versions)
        if not targets:
            self._retire_deleted_versions(record, entry)
            reason = "no version folders" if not entry.versions else "model_version_policy selects none of the version folders"
            self._report_problem(record, entry, ErrorCode.FAILED_PRECONDITION, reason)
            return
        record.model_error = None

        to_load = [v for v in targets if force or self._needs_load(record, entry.versions[v], config)]
        previous = {v: record.status.get(v) for v in to_load}
        for number in to_load:
            self._set_state(record, number, VersionState.LOADING, "loading")
        results = await asyncio.gather(*(self._load(record.model_id, entry.versions[v], config) for v in to_load))

        if record.stamp != stamp:  # overtaken: the queued reconcile will load the newer files
            for number, result in zip(to_load, results):
                if isinstance(result, Instance):
                    self._spawn(self._release(result))
                self._restore_status(record, number, previous[number])
            log.info("load_discarded", model=record.model_id, versions=to_load, reason="overtaken by a newer change")
            return

        failed = []
        for number, result in zip(to_load, results):
            if isinstance(result, Instance):
                old = record.instances.get(number)
                record.instances[number] = result
                self._watch(result)
                self._set_state(record, number, VersionState.AVAILABLE, "loaded")
                if old is not None:
                    self._retire(record, old, "replaced by a fresh load of the same version", visible=False)
            else:
                failed.append(number)
                self._record_load_failure(record, number, result)
        # Instances whose settings changed only in model_version_policy keep serving with the new config.
        for number in targets:
            if number in record.instances and number not in to_load:
                record.instances[number].config = config

        self._retire_deleted_versions(record, entry)
        for number in sorted(record.instances):
            if number in targets:
                continue
            if failed:
                log.warning(
                    "version_kept", model=record.model_id, version=number,
                    reason=f"kept serving because version(s) {failed} failed to load",
                )
                continue
            self._retire(record, record.instances[number], f"retired by model_version_policy (serving {targets})")

    def _needs_load(self, record: ModelRecord, version: VersionEntry, config: model_config.ModelConfig) -> bool:
        instance = record.instances.get(version.version)
        if instance is None:
            return True
        return instance.fingerprint != version.fingerprint or instance.config.pipeline_hash != config.pipeline_hash

    async def _resolve_config(self, entry: ModelEntry) -> tuple[Any, tuple[ErrorCode, str] | None]:
        if entry.config_raw is None:
            if not entry.versions:
                return None, (ErrorCode.FAILED_PRECONDITION, "no config.json and no version folders")
            latest = max(entry.versions)
            task = await self._blocking(self._loader.infer_task, entry.versions[latest].path)
            if task is None:
                return None, (
                    ErrorCode.FAILED_PRECONDITION,
                    f"no config.json, and the task cannot be inferred from the files of version {latest}: "
                    'add a config.json with a "task"',
                )
            return model_config.build({"task": task}, inferred=True), None
        try:
            return model_config.parse(entry.config_raw), None
        except model_config.ConfigError as exc:
            return None, (ErrorCode.INVALID_ARGUMENT, f"config.json is invalid: {exc}")

    def _report_problem(self, record: ModelRecord, entry: ModelEntry, code: ErrorCode, message: str) -> None:
        log.error("model_config_rejected", model=record.model_id, error_code=code.value, error=message,
                  serving=sorted(record.instances))
        if record.instances:
            record.config_error = message  # keep serving the settings that worked
            return
        record.model_error = (code, message)
        if entry.versions:
            latest = max(entry.versions)
            self._set_state(record, latest, VersionState.END, message, code=code, message=message)

    def _record_load_failure(self, record: ModelRecord, number: int, error: ModelLoadError) -> None:
        code = ErrorCode(error.code) if error.code in ErrorCode.__members__ else ErrorCode.UNKNOWN
        if number in record.instances:  # the previously loaded files of this version keep serving
            self._set_state(record, number, VersionState.AVAILABLE, "reload failed", code=code,
                            message=f"reload failed, still serving the previously loaded files: {error.message}")
            return
        self._set_state(record, number, VersionState.END, error.message, code=code, message=error.message)

    def _retire_deleted_versions(self, record: ModelRecord, entry: ModelEntry) -> None:
        for number in sorted(record.instances):
            if number not in entry.versions:
                self._retire(record, record.instances[number], "version folder removed", forget=True)

    # ---------------------------------------------------------------- loading and retiring

    async def _load(self, model_id: str, version: VersionEntry, config: model_config.ModelConfig) -> Instance | ModelLoadError:
        started = time.monotonic()
        try:
            loaded = await self._blocking(self._loader.load, version.path, config, model_id)
        except ModelLoadError as exc:
            metrics.MODEL_LOADS.labels(model_id, "failure").inc()
            log.error("model_load_failed", model=model_id, version=version.version, error=exc.message,
                      detail=exc.detail[:2000], duration_ms=round((time.monotonic() - started) * 1000, 1))
            return exc
        except Exception as exc:  # a loader bug must not kill the reconcile loop
            log.exception("model_load_crashed", model=model_id, version=version.version)
            metrics.MODEL_LOADS.labels(model_id, "failure").inc()
            return ModelLoadError(f"version {version.version} failed to load: internal error", detail=repr(exc))
        metrics.MODEL_LOADS.labels(model_id, "success").inc()
        metrics.LOAD_SECONDS.labels(model_id).observe(time.monotonic() - started)
        return Instance(model_id, version.version, loaded, version.fingerprint, config)

    def _retire(self, record: ModelRecord, instance: Instance, reason: str, *, visible: bool = True,
                forget: bool = False) -> asyncio.Task:
        """Stop routing to `instance`, then drain and release it in the background."""
        if record.instances.get(instance.version) is instance:
            del record.instances[instance.version]
        if visible:
            self._set_state(record, instance.version, VersionState.UNLOADING, reason)

        async def drain_and_release() -> None:
            timeout = instance.config.drain_timeout_s
            try:
                await asyncio.wait_for(instance.idle.wait(), timeout)
            except TimeoutError:
                log.warning("drain_timeout", model=record.model_id, version=instance.version,
                            inflight=instance.inflight, timeout_s=timeout)
            await self._release(instance)
            if visible and instance.version not in record.instances:
                if forget:
                    self._forget_status(record, instance.version)
                else:
                    self._set_state(record, instance.version, VersionState.END, reason)

        return self._spawn(drain_and_release())

    async def _release(self, instance: Instance) -> None:
        def close() -> None:
            instance.model.close()
            gc.collect()  # OpenVINO frees compiled models on destruction; make that happen now

        try:
            await self._blocking(close)
        except Exception:
            log.exception("model_release_failed", model=instance.model_id, version=instance.version)
        else:
            log.info("model_version_released", model=instance.model_id, version=instance.version)

    # ---------------------------------------------------------------- explicit load / unload

    async def load_model(self, model_id: str) -> ModelView:
        """Explicit (re)load from disk; lifts an explicit unload. One explicit call per model at a time."""
        model_id = validate_model_id(model_id)
        record = self._models.get(model_id)
        if record is None:
            record = self._models[model_id] = ModelRecord(model_id, self.root / model_id)
        self._claim(record, "load")
        try:
            entry = await self._blocking(scan_model, self.root, model_id)
            if entry is None:
                if record.desired is None and not record.instances:
                    self._models.pop(model_id, None)
                raise ModelNotFound(f"The model '{model_id}' does not exist in the repository", param="model")
            async with record.lock:
                record.unloaded_by_request = False
                record.desired = entry
                record.stamp += 1
                record.applied_stamp = stamp = record.stamp
                await self._converge(record, entry, stamp, force=True)
            view = self._view(record)
            if not view.available_versions:
                raise BadRequest(f"failed to load '{model_id}': {view.error or 'no version became available'}")
            return view
        finally:
            record.explicit_busy = False

    async def unload_model(self, model_id: str) -> ModelView:
        """Explicit unload: drains and releases every version; stays unloaded until load_model."""
        model_id = validate_model_id(model_id)
        record = self._models.get(model_id)
        if record is None or record.desired is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
        self._claim(record, "unload")
        try:
            async with record.lock:
                record.unloaded_by_request = True
                record.stamp += 1
                record.applied_stamp = record.stamp
                retiring = [self._retire(record, i, "unloaded by request") for i in list(record.instances.values())]
            if retiring:
                await asyncio.gather(*retiring)
            return self._view(record)
        finally:
            record.explicit_busy = False

    def _claim(self, record: ModelRecord, action: str) -> None:
        if record.explicit_busy:
            raise Conflict(
                f"failed to {action} '{record.model_id}': another load or unload of this model is in progress",
                code="model_busy",
            )
        record.explicit_busy = True

    # ---------------------------------------------------------------- request routing

    @asynccontextmanager
    async def lease(self, model_id: str, version: int | None = None) -> AsyncIterator[Instance]:
        """Hold a version for the length of a request; retired versions wait for their leases."""
        instance = self.resolve(model_id, version)
        instance.inflight += 1
        instance.idle.clear()
        try:
            yield instance
        finally:
            instance.inflight -= 1
            if instance.inflight == 0:
                instance.idle.set()

    def resolve(self, model_id: str, version: int | None = None) -> Instance:
        """The instance that serves a request: the given version, else the newest available one."""
        record = self._record(model_id)
        self._repair_broken(record)
        if version is not None:
            if version in record.instances:
                return record.instances[version]
            if version in record.status:
                raise ModelNotReady(f"Version {version} of model '{model_id}' is not available", param="model")
            raise ModelNotFound(f"The model '{model_id}' has no version {version}", param="model")
        if not record.instances:
            raise ModelNotReady(f"The model '{model_id}' is not ready: {self._view(record).error or 'loading'}",
                                param="model")
        return record.instances[max(record.instances)]

    def _watch(self, instance: Instance) -> None:
        """Pipelines that can break on their own (generation workers) report it at once: repaired now,
        not at the next request or rescan."""
        watch = getattr(instance.model, "watch", None)
        if watch is not None:
            watch(lambda: self._on_broken(instance.model_id))

    def _on_broken(self, model_id: str) -> None:
        record = self._models.get(model_id)
        if record is not None:
            self._repair_broken(record)

    def _repair_broken(self, record: ModelRecord) -> None:
        """Loaded pipelines that can no longer serve (a generation worker died) stop getting requests
        and their version is loaded again, unless the model was unloaded on purpose. Checked when a
        request resolves the model and at every rescan, so the status APIs catch up without traffic."""
        broken = [i for i in record.instances.values() if getattr(i.model, "broken", None)]
        for instance in broken:
            reason = instance.model.broken
            log.error("model_version_broken", model=record.model_id, version=instance.version, reason=reason)
            self._retire(record, instance, f"{reason}; reloading")
        if broken and record.desired is not None and not record.unloaded_by_request:
            self._schedule(record.model_id, record.desired)

    # ---------------------------------------------------------------- views for the status APIs

    def _record(self, model_id: str) -> ModelRecord:
        validate_model_id(model_id)  # bounds the id before it is echoed in an error
        record = self._models.get(model_id)
        if record is None or record.desired is None:
            raise ModelNotFound(f"The model '{model_id}' does not exist", param="model")
        return record

    def _visible(self) -> list[ModelRecord]:
        return [r for _, r in sorted(self._models.items()) if r.desired is not None]

    def describe(self, model_id: str) -> ModelView:
        return self._view(self._record(model_id))

    def describe_all(self) -> list[ModelView]:
        return [self._view(r) for r in self._visible()]

    def _view(self, record: ModelRecord) -> ModelView:
        versions = []
        for number in sorted(record.status):
            status = record.status[number]
            code, message = status.error_code.value, status.error_message
            if record.config_error and status.state is VersionState.AVAILABLE:
                code = ErrorCode.INVALID_ARGUMENT.value
                message = f"still serving the previous configuration; {record.config_error}"
            versions.append(VersionView(number, status.state, code, message, status.reason))
        error = record.model_error[1] if record.model_error else record.config_error
        if record.unloaded_by_request and not error:
            error = "unloaded by request"
        return ModelView(record.model_id, record.task, tuple(versions), error)

    # ---------------------------------------------------------------- state bookkeeping

    def _set_state(self, record: ModelRecord, number: int, state: VersionState, reason: str, *,
                   code: ErrorCode = ErrorCode.OK, message: str = "") -> None:
        status = record.status.setdefault(number, VersionStatus())
        now = time.monotonic()
        log.info("model_version_transition", model=record.model_id, version=number, **{"from": status.state.value},
                 to=state.value, reason=reason, error_code=code.value, duration_ms=round((now - status.since) * 1000, 1))
        metrics.VERSION_STATE.labels(record.model_id, str(number), status.state.value).set(0)
        metrics.VERSION_STATE.labels(record.model_id, str(number), state.value).set(1)
        status.state, status.error_code, status.error_message, status.reason, status.since = state, code, message, reason, now

    def _restore_status(self, record: ModelRecord, number: int, previous: VersionStatus | None) -> None:
        if previous is None:
            record.status.pop(number, None)
        else:
            record.status[number] = previous

    def _forget_status(self, record: ModelRecord, number: int) -> None:
        status = record.status.pop(number, None)
        if status is not None:
            metrics.VERSION_STATE.labels(record.model_id, str(number), status.state.value).set(0)

    # ---------------------------------------------------------------- plumbing

    async def _blocking(self, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, partial(fn, *args))

    def _spawn(self, coro: Any) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        return task

    async def settle(self) -> None:
        """Wait until no reconcile, drain or release is running (tests and shutdown)."""
        while self._background:
            await asyncio.gather(*list(self._background), return_exceptions=True)

    async def close(self) -> None:
        for record in list(self._models.values()):
            for instance in list(record.instances.values()):
                self._retire(record, instance, "server shutting down")
        await self.settle()
        self._executor.shutdown(wait=True)
