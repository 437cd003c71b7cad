"""Model lifecycle: keeps the served model versions in step with repository snapshots.

Rules (see README "The model repository"):
- one asyncio.Lock per model: changes to one model apply in order, models load in parallel;
- load-then-swap: a new instance is fully loaded before the one it replaces is retired, and a
  retired instance drains its in-flight requests before it is released;
- serving status and pending work are separate: a reload of a serving version is built aside (a
  `pending` reason on the version) while its status stays AVAILABLE; status records are immutable
  snapshots, so an overtaken load restores exactly what was there and a drain only ends the state it set;
- a stamp per model: a load overtaken by a newer change of the same model is discarded;
- a bad config or a failed load never takes down what is serving;
- reads (resolve, describe) never change state; broken pipelines report themselves (watch) and the
  periodic rescan double-checks;
- blocking work runs on separate executors for scanning, loading and releasing, so one slow load
  never delays a rescan or the release of a retired version's memory.
"""

from __future__ import annotations

import asyncio
import gc
import time
from concurrent.futures import Executor, ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import structlog

from server import metrics, native_memory
from server.errors import BadRequest, Conflict, ModelNotFound, ModelNotReady
from server.pipelines.base import ModelLoader, ModelLoadError
from server.repository import config as model_config
from server.repository import scan as scanning
from server.repository.policy import select_versions
from server.repository.records import (
    Instance, ModelRecord, ModelView, VersionStatus, VersionView, not_serving_reason, validate_model_id, view_of,
)
from server.repository.scan import ModelEntry, Snapshot, VersionEntry, diff, scan
from server.repository.states import ErrorCode, VersionState

__all__ = ["Instance", "ModelManager", "ModelView", "VersionView", "validate_model_id"]

log = structlog.get_logger("server.repository")

_FROM_RECORD: Any = object()  # _converge's override default: whatever override the record holds


@dataclass(frozen=True)
class Outcome:
    """What one convergence did, for the explicit load call that asked for it."""

    overtaken: bool = False
    problem: str | None = None  # config or version selection rejected
    failures: tuple[str, ...] = ()  # load errors of versions that were tried
    loaded: tuple[int, ...] = ()


@dataclass
class _Executors:
    scan: Executor
    load: Executor
    release: Executor
    all: tuple[Executor, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.all = (self.scan, self.load, self.release)


class ModelManager:
    def __init__(self, root: Path, loader: ModelLoader, *, load_workers: int = 2) -> None:
        self.root = Path(root).resolve()
        self._loader = loader
        self._executors = _Executors(
            scan=ThreadPoolExecutor(1, thread_name_prefix="repository-scan"),
            load=ThreadPoolExecutor(load_workers, thread_name_prefix="model-load"),
            release=ThreadPoolExecutor(1, thread_name_prefix="model-release"),
        )
        self._models: dict[str, ModelRecord] = {}
        self._snapshot: Snapshot | None = None
        self._scan_lock = asyncio.Lock()
        self._explicit: set[str] = set()  # models with an explicit load/unload call running
        self._background: set[asyncio.Task] = set()
        self._reconciles: set[asyncio.Task] = set()  # the subset of _background applying changes
        self.ready = False  # the first scan's loads have finished
        self._closing = False

    # ---------------------------------------------------------------- repository changes

    async def rescan(self, *, wait: bool = True, unsettled: frozenset[Path] = frozenset()) -> None:
        """Scan the repository and apply every change. With wait, return once the resulting loads
        finished; the watcher does not wait, so that a newer change can overtake a slow load.
        `unsettled`: paths still being written; their version folders and config.json keep their
        previous state in this scan (see scan.hold_unsettled)."""
        async with self._scan_lock:
            for record in list(self._models.values()):
                self._repair_broken(record)
            snapshot = await self._run(self._executors.scan, scan, self.root)
            snapshot = scanning.hold_unreadable(snapshot, self._snapshot)  # a listing error is no removal
            if unsettled:
                snapshot = scanning.hold_unsettled(snapshot, self._snapshot, unsettled)
            changes = diff(self._snapshot, snapshot)
            previous_warnings = set(self._snapshot.warnings) if self._snapshot else set()
            self._snapshot = snapshot
            for warning in snapshot.warnings:
                if warning not in previous_warnings:  # each skipped link or odd name is logged once
                    log.warning("repository_warning", message=warning)
            tasks = [self._schedule(model_id, snapshot.models.get(model_id)) for model_id in sorted(changes.changed)]
        if wait:
            # Every reconcile under way, not only this scan's: one the watcher started a moment earlier
            # is part of "the repository as it is now". Shielded: a client hanging up cancels no load.
            pending = set(tasks) | self._reconciles
            if pending:
                await asyncio.shield(asyncio.gather(*pending))

    async def initial_load(self) -> None:
        await self.rescan()
        self.ready = True
        log.info("repository_ready", models=len(self._visible()))

    def _schedule(self, model_id: str, entry: ModelEntry | None) -> asyncio.Task:
        record = self._models.get(model_id)
        if record is None:
            record = self._models[model_id] = ModelRecord(model_id, self.root / model_id)
        if entry is not None:
            known = set(record.desired.warnings) if record.desired is not None else set()
            for warning in entry.warnings:
                if warning not in known:  # logged once, not at every change of the model
                    log.warning("repository_warning", model=model_id, message=warning)
        record.desired = entry
        record.stamp += 1
        task = self._spawn(self._reconcile(record))
        self._reconciles.add(task)
        task.add_done_callback(self._reconciles.discard)
        return task

    async def _reconcile(self, record: ModelRecord) -> None:
        async with record.lock:
            if self._closing or record.applied_stamp == record.stamp or self._models.get(record.model_id) is not record:
                return  # a later task already applied the newest entry
            record.applied_stamp = stamp = record.stamp
            try:
                await self._converge(record, record.desired, stamp)
            except Exception:  # a bug here must not stop the watcher; the next change retries
                log.exception("reconcile_failed", model=record.model_id)

    async def _converge(self, record: ModelRecord, entry: ModelEntry | None, stamp: int, *, force: bool = False,
                        override: Any = _FROM_RECORD) -> Outcome:
        """Make what `record` serves match `entry`. Called with record.lock held. `force` reloads every
        selected version (explicit load); `override` is a config document used instead of config.json."""
        if entry is None:
            for instance in list(record.instances.values()):
                self._retire(record, instance, "model folder removed", forget=True)
            if record.stamp == stamp:
                self._models.pop(record.model_id, None)
                for number in list(record.status):  # no state gauge outlives the model
                    self._put_status(record, number, None)
                log.info("model_removed", model=record.model_id)
            return Outcome(problem="the model folder was removed")
        if record.unloaded_by_request and not force:
            return Outcome(problem="unloaded by request")  # pinned until an explicit load

        for number in list(record.status):  # forget version folders that are gone and not serving
            if number not in entry.versions and number not in record.instances:
                self._put_status(record, number, None)

        if override is _FROM_RECORD:
            override = record.config_override
        config, problem = await self._resolve_config(entry, override)
        if record.stamp != stamp:
            return Outcome(overtaken=True)
        if problem is not None:
            self._retire_deleted_versions(record, entry)
            self._report_problem(record, entry, *problem)
            return Outcome(problem=problem[1])
        targets = select_versions(config.version_policy, entry.versions)
        if not targets:
            self._retire_deleted_versions(record, entry)
            reason = "no version folders" if not entry.versions else "model_version_policy selects none of the version folders"
            self._report_problem(record, entry, ErrorCode.FAILED_PRECONDITION, reason)
            return Outcome(problem=reason)
        to_load = [v for v in targets if force or self._needs_load(record, entry.versions[v], config)]
        if not force and not all(v in record.instances for v in targets):
            to_load += [v for v in sorted(record.broken_versions)
                        if v not in targets and v in entry.versions and v not in record.instances]
        marks = self._mark_loading(record, to_load, "explicit load" if force else "files or settings changed")
        results = await asyncio.gather(*(self._load(record.model_id, entry.versions[v], config) for v in to_load))

        if record.stamp != stamp:  # overtaken: the queued reconcile (or the unload) decides what serves
            for number, result in zip(to_load, results):
                if isinstance(result, Instance):
                    self._spawn(self._release(result))
            self._unmark(record, marks)
            log.info("load_discarded", model=record.model_id, versions=to_load, reason="overtaken by a newer change")
            return Outcome(overtaken=True)

        if force and not all(isinstance(result, Instance) for result in results):
            return self._fail_explicit_load(record, to_load, results, marks)
        record.task = config.task
        record.config_error = None
        record.model_error = None
        record.broken_versions.clear()

        failed, failures = [], []
        for number, result in zip(to_load, results):
            record.pending.pop(number, None)
            if isinstance(result, Instance):
                old = record.instances.get(number)
                record.instances[number] = result
                self._watch(result)
                self._set_state(record, number, VersionState.AVAILABLE, "loaded")
                if old is not None:
                    self._retire(record, old, "replaced by a fresh load of the same version", visible=False)
            else:
                failed.append(number)
                failures.append(result.message)
                self._record_load_failure(record, number, result)
        record.config_override = override
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
        return Outcome(failures=tuple(failures), loaded=tuple(n for n in to_load if n not in failed))

    def _fail_explicit_load(self, record: ModelRecord, to_load: list[int], results: list, marks: dict) -> Outcome:
        """An explicit load is all or nothing: when a version fails, the ones that loaded are released
        unused and what served keeps serving, with the settings it had."""
        failures = []
        for number, result in zip(to_load, results):
            if isinstance(result, Instance):
                self._spawn(self._release(result))
                self._unmark(record, {number: marks[number]})
            else:
                record.pending.pop(number, None)
                self._record_load_failure(record, number, result)
                failures.append(result.message)
        return Outcome(failures=tuple(failures))

    def _mark_loading(self, record: ModelRecord, numbers: list[int], why: str) -> dict[int, tuple]:
        """Show the loads about to start: a serving version keeps its status and gets a pending reason;
        any other goes LOADING. Returns what is needed to undo exactly this if the load is discarded."""
        marks: dict[int, tuple] = {}
        for number in numbers:
            if number in record.instances:
                record.pending[number] = pending = f"reloading ({why}); the loaded copy keeps serving"
                marks[number] = ("pending", pending)
                log.info("model_version_reloading", model=record.model_id, version=number, reason=why)
            else:
                before = record.status.get(number)
                marks[number] = ("status", before, self._set_state(record, number, VersionState.LOADING, "loading"))
        return marks

    def _unmark(self, record: ModelRecord, marks: dict[int, tuple]) -> None:
        """Undo _mark_loading, but only where nobody changed the state since (an unload, a drain)."""
        for number, mark in marks.items():
            if mark[0] == "pending":
                if record.pending.get(number) is mark[1]:
                    del record.pending[number]
            elif record.status.get(number) is mark[2]:
                before = mark[1]
                if before is not None and before.state is VersionState.UNLOADING and record.draining.get(number) is not before:
                    # the drain it showed finished meanwhile (and left the load's status alone): it ended
                    self._set_state(record, number, VersionState.END, before.reason)
                else:
                    self._put_status(record, number, before)

    def _needs_load(self, record: ModelRecord, version: VersionEntry, config: model_config.ModelConfig) -> bool:
        instance = record.instances.get(version.version)
        if instance is None:
            return True
        return instance.fingerprint != version.fingerprint or instance.config.pipeline_hash != config.pipeline_hash

    async def _resolve_config(self, entry: ModelEntry, override: dict | None) -> tuple[Any, tuple[ErrorCode, str] | None]:
        if override is not None:
            try:
                return model_config.build(override), None
            except model_config.ConfigError as exc:  # checked by load_model already; kept for safety
                return None, (ErrorCode.INVALID_ARGUMENT, f"the config override is invalid: {exc}")
        if entry.config_raw is None:
            if not entry.versions:
                return None, (ErrorCode.FAILED_PRECONDITION, "no config.json and no version folders")
            latest = max(entry.versions)
            task = await self._run(self._executors.scan, self._loader.infer_task, entry.versions[latest].path)
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
        if self._closing:
            log.info("model_load_abandoned", model=model_id, version=version.version, reason="server shutting down")
            return ModelLoadError(f"version {version.version} was not loaded: the server is shutting down")
        started = time.monotonic()
        try:
            loaded = await self._run(self._executors.load, self._loader.load, version.path, config.pipeline, model_id)
        except ModelLoadError as exc:
            if self._closing:  # stopped by the shutdown (abandon_loads): not the model's failure
                log.info("model_load_abandoned", model=model_id, version=version.version, reason="server shutting down")
                return exc
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
        """Stop routing to `instance` now, then drain and release it in the background. The drain ends
        only the UNLOADING status it set: if a reload of the version started meanwhile, that one's
        status stands."""
        if record.instances.get(instance.version) is instance:
            del record.instances[instance.version]
            record.pending.pop(instance.version, None)
        unloading = self._set_state(record, instance.version, VersionState.UNLOADING, reason) if visible else None
        if unloading is not None:
            record.draining[instance.version] = unloading

        async def drain_and_release() -> None:
            timeout = instance.config.drain_timeout_s
            try:
                await asyncio.wait_for(instance.idle.wait(), timeout)
            except TimeoutError:
                log.warning("drain_timeout", model=record.model_id, version=instance.version,
                            inflight=instance.inflight, timeout_s=timeout)
            await self._release(instance)
            if unloading is not None and record.draining.get(instance.version) is unloading:
                del record.draining[instance.version]
            if unloading is not None and record.status.get(instance.version) is unloading:
                if forget:
                    self._put_status(record, instance.version, None)
                else:
                    self._set_state(record, instance.version, VersionState.END, reason)

        return self._spawn(drain_and_release())

    async def _release(self, instance: Instance) -> None:
        def close() -> None:
            instance.model.close()
            gc.collect()  # OpenVINO frees compiled models on destruction; make that happen now
            native_memory.return_freed_memory()

        try:
            await self._run(self._executors.release, close)
        except Exception:
            log.exception("model_release_failed", model=instance.model_id, version=instance.version)
        else:
            log.info("model_version_released", model=instance.model_id, version=instance.version)

    # ---------------------------------------------------------------- explicit load / unload

    async def load_model(self, model_id: str, config: dict | None = None) -> ModelView:
        """Explicit (re)load from disk, as Triton's repository extension: swaps in fresh instances of
        every selected version or raises saying why not; lifts an explicit unload. `config` is a
        config.json document used instead of the file (until the next explicit load without one).
        The load runs as the manager's own task: a client that hangs up does not cancel it halfway."""
        model_id = validate_model_id(model_id)
        override = _checked_override(config) if config is not None else None
        self._claim(model_id, "load")
        task = self._spawn(self._explicit_load(model_id, override))
        return await asyncio.shield(task)

    async def _explicit_load(self, model_id: str, override: dict | None) -> ModelView:
        try:
            # Only what the full scan finds is a model (a version folder such as `m/1` is not), and no
            # record is made for anything else.
            if model_id not in (await self._scan_now(model_id)).models:
                raise ModelNotFound(f"The model '{model_id}' does not exist in the repository", param="model")
            record = self._models.get(model_id)
            if record is None:
                record = self._models[model_id] = ModelRecord(model_id, self.root / model_id)
            async with record.lock:
                # Scanned again under the lock: the entry is at least as new as any change the watcher
                # queued meanwhile, whose reconcile this load then stands for.
                entry = (await self._scan_now(model_id)).models.get(model_id)
                if entry is None or self._models.get(model_id) is not record:
                    raise Conflict(f"failed to load '{model_id}': its folder was removed meanwhile", code="model_changed")
                record.desired = entry
                record.stamp += 1
                record.applied_stamp = stamp = record.stamp
                pinned = record.unloaded_by_request
                record.unloaded_by_request = False
                outcome = await self._converge(record, entry, stamp, force=True, override=override)
                if outcome.problem is not None or outcome.failures:
                    record.unloaded_by_request = pinned and not record.instances
            if outcome.overtaken:
                raise Conflict(
                    f"failed to load '{model_id}': the model changed while it loaded (a newer change on disk "
                    "or an unload); the newer change is applied, see the model's status", code="model_changed")
            if outcome.problem is not None or outcome.failures:
                why = outcome.problem or "; ".join(outcome.failures)
                raise BadRequest(f"failed to load '{model_id}': {why}")
            return view_of(record)
        finally:
            self._explicit.discard(model_id)

    async def _scan_now(self, model_id: str) -> Snapshot:
        """A full scan for an explicit call; its entry for `model_id` also becomes the watcher's baseline,
        so a later rescan diffs against what was loaded."""
        async with self._scan_lock:
            snapshot = await self._run(self._executors.scan, scan, self.root)
            # Only an entry found: a folder that vanished is for the watcher's own diff to remove.
            if self._snapshot is not None and model_id in snapshot.models:
                models = {**self._snapshot.models, model_id: snapshot.models[model_id]}
                self._snapshot = replace(self._snapshot, models=models)
            return snapshot

    async def unload_model(self, model_id: str) -> ModelView:
        """Explicit unload: stops routing to every version at once and returns; the versions drain
        (UNLOADING) and are released (END) in the background. Stays unloaded until load_model."""
        record = self._record(model_id)
        self._claim(record.model_id, "unload")
        try:
            record.unloaded_by_request = True
            record.stamp += 1  # a load under way is discarded when it finishes
            record.applied_stamp = record.stamp
            for instance in list(record.instances.values()):
                self._retire(record, instance, "unloaded by request")
            return view_of(record)
        finally:
            self._explicit.discard(record.model_id)

    def _claim(self, model_id: str, action: str) -> None:
        if model_id in self._explicit:
            raise Conflict(
                f"failed to {action} '{model_id}': another load or unload of this model is in progress",
                code="model_busy",
            )
        self._explicit.add(model_id)

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
        """The instance that serves a request: the given version, else the newest available one.
        A read: a broken pipeline is skipped here, and repaired by the manager when it reports itself."""
        record = self._record(model_id)
        serving = {n: i for n, i in record.instances.items() if not i.broken}
        if version is not None:
            if version in serving:
                return serving[version]
            if version in record.status:
                raise ModelNotReady(f"Version {version} of model '{model_id}' is not available", param="model")
            raise ModelNotFound(f"The model '{model_id}' has no version {version}", param="model")
        if not serving:
            raise ModelNotReady(f"The model '{model_id}' is not ready: {not_serving_reason(record)}", param="model")
        return serving[max(serving)]

    def effective_config(self, model_id: str) -> dict:
        """The config.json document (defaults filled in) of the newest serving version."""
        record = self._record(model_id)
        if not record.instances:
            raise ModelNotReady(f"The model '{model_id}' has no serving version, so no configuration in effect",
                                param="model")
        return record.instances[max(record.instances)].config.document()

    def _watch(self, instance: Instance) -> None:
        """Pipelines that can break on their own (generation workers) report it at once: repaired now,
        not at the next rescan."""
        watch = getattr(instance.model, "watch", None)
        if watch is not None:
            watch(lambda: self._on_broken(instance.model_id))

    def _on_broken(self, model_id: str) -> None:
        record = self._models.get(model_id)
        if record is not None:
            self._repair_broken(record)

    def _repair_broken(self, record: ModelRecord) -> None:
        """Loaded pipelines that can no longer serve stop getting requests and their version is loaded
        again, unless the model was unloaded on purpose. Run when a pipeline reports itself broken and
        at every rescan; never from a read."""
        broken = [i for i in record.instances.values() if i.broken]
        for instance in broken:
            log.error("model_version_broken", model=record.model_id, version=instance.version, reason=instance.broken)
            self._retire(record, instance, f"{instance.broken}; reloading")
            record.broken_versions.add(instance.version)
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
        return view_of(self._record(model_id))

    def describe_all(self) -> list[ModelView]:
        return [view_of(r) for r in self._visible()]

    # ---------------------------------------------------------------- state bookkeeping

    def _set_state(self, record: ModelRecord, number: int, state: VersionState, reason: str, *,
                   code: ErrorCode = ErrorCode.OK, message: str = "") -> VersionStatus:
        before = record.status.get(number) or VersionStatus()
        status = VersionStatus(state, code, message, reason)
        log.info("model_version_transition", model=record.model_id, version=number, **{"from": before.state.value},
                 to=state.value, reason=reason, error_code=code.value,
                 duration_ms=round((status.since - before.since) * 1000, 1))
        self._put_status(record, number, status)
        return status

    def _put_status(self, record: ModelRecord, number: int, status: VersionStatus | None) -> None:
        """Replace (or with None, forget) a version's status snapshot, keeping the state gauge in step."""
        old = record.status.pop(number, None)
        if old is not None:
            try:  # removed, not set to 0: series of versions long gone must not pile up
                metrics.VERSION_STATE.remove(record.model_id, str(number), old.state.value)
            except KeyError:
                pass
        if status is not None:
            record.status[number] = status
            metrics.VERSION_STATE.labels(record.model_id, str(number), status.state.value).set(1)

    # ---------------------------------------------------------------- plumbing

    async def _run(self, executor: Executor, fn: Callable, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(executor, partial(fn, *args))

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
        self._closing = True  # queued reconciles do nothing, and loads under way are discarded when done
        for record in list(self._models.values()):
            record.stamp += 1
            for instance in list(record.instances.values()):
                self._retire(record, instance, "server shutting down")
        stopped = self._loader.abandon_loads()
        if stopped:
            log.info("loads_abandoned", workers=stopped, reason="server shutting down")
        await self.settle()
        for executor in self._executors.all:
            executor.shutdown(wait=True)


def _checked_override(document: Any) -> dict:
    """A config override must pass the same schema as config.json, before anything else happens."""
    if not isinstance(document, dict):
        raise BadRequest("parameters.config must be a JSON object (a config.json document)", param="parameters.config")
    try:
        model_config.build(document)
    except model_config.ConfigError as exc:
        raise BadRequest(f"parameters.config is not a valid config.json: {exc}", param="parameters.config") from None
    return document
