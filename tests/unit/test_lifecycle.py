"""The truth of the status during changes: serving status apart from pending work, reads without side
effects, explicit control with exact outcomes. Loads are held on gates, so every test signals load
start and end through events instead of sleeping."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
import pytest

from server.errors import BadRequest, Conflict, ModelNotFound, ModelNotReady
from server.repository.manager import ModelManager
from server.repository.states import VersionState
from tests.unit.fakes import FakeLoader, write_model, write_version

EMBED = {"task": "embeddings"}
WAIT_S = 20.0  # a failure bound only: every wait below ends on an event


async def apply(manager: ModelManager) -> None:
    await manager.rescan()
    await manager.settle()


def version(manager: ModelManager, model_id: str, number: int):
    (found,) = [v for v in manager.describe(model_id).versions if v.version == number]
    return found


async def wait_until(predicate, what: str) -> None:
    """Poll the manager's own state on the event loop (each step yields to the tasks under test)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + WAIT_S
    while not predicate():
        assert loop.time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def test_a_serving_version_stays_available_while_its_reload_is_built(tmp_path: Path, manager: ModelManager,
                                                                        loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    serving = manager.resolve("m")
    gate = loader.hold("m")
    (path / "config.json").write_text(json.dumps({**EMBED, "embeddings": {"normalize": False}}))
    await manager.rescan(wait=False)
    await gate.wait_started()

    v1 = version(manager, "m", 1)
    assert v1.state is VersionState.AVAILABLE and v1.error_code == "OK"
    assert "reloading" in v1.pending
    assert manager.describe("m").available_versions == [1]
    assert manager.resolve("m") is serving  # requests keep going to the loaded copy

    gate.open()
    await manager.settle()
    assert manager.resolve("m") is not serving and serving.model.closed
    assert version(manager, "m", 1).pending == ""
    assert version(manager, "m", 1).state is VersionState.AVAILABLE


async def test_a_reload_overtaken_by_a_revert_leaves_what_was_there(tmp_path: Path, manager: ModelManager,
                                                                   loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    serving = manager.resolve("m")
    before = version(manager, "m", 1)
    gate = loader.hold("m")
    (path / "config.json").write_text(json.dumps({**EMBED, "embeddings": {"normalize": False}}))
    await manager.rescan(wait=False)
    await gate.wait_started()
    (path / "config.json").write_text(json.dumps(EMBED))  # reverted before the reload finished
    await manager.rescan(wait=False)
    gate.open()
    await manager.settle()

    assert version(manager, "m", 1) == before  # AVAILABLE, nothing pending: never LOADING for good
    assert manager.resolve("m") is serving and not serving.model.closed
    assert gate.entered == 1  # the revert needed no load; the overtaken one was released
    assert [m.closed for m in loader.loaded] == [False, True]


async def test_an_overtaken_load_of_a_new_version_restores_its_absence(tmp_path: Path, manager: ModelManager,
                                                                      loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    gate = loader.hold("m")
    write_version(path, 2)
    await manager.rescan(wait=False)
    await gate.wait_started()
    assert version(manager, "m", 2).state is VersionState.LOADING
    (path / "2" / "weights.txt").unlink()
    (path / "2").rmdir()
    await manager.rescan(wait=False)
    gate.open()
    await manager.settle()
    assert [v.version for v in manager.describe("m").versions] == [1]
    assert version(manager, "m", 1).state is VersionState.AVAILABLE


async def test_a_drain_ending_after_a_reload_began_does_not_end_the_reload(tmp_path: Path, manager: ModelManager,
                                                                         loader: FakeLoader) -> None:
    write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    gate = loader.hold("m")
    async with manager.lease("m") as instance:
        instance.model.fail("the generation worker process stopped")  # reports itself, as the engine does
        await gate.wait_started()
        assert version(manager, "m", 1).state is VersionState.LOADING
    await wait_until(lambda: instance.model.closed, "the drained copy released")
    await wait_until(lambda: len(manager._background) == 1, "the drain finished (only the held reload is left)")
    assert version(manager, "m", 1).state is VersionState.LOADING  # not overwritten with END
    gate.open()
    await manager.settle()
    assert version(manager, "m", 1).state is VersionState.AVAILABLE
    assert not manager.resolve("m").model.broken


async def test_reads_never_repair(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    write_model(tmp_path, "a", config=EMBED)
    write_model(tmp_path, "b", config=EMBED)
    await apply(manager)
    broken = manager.resolve("a")
    broken.model.broken = "the generation worker process stopped"
    for _ in range(3):
        assert [v.model_id for v in manager.describe_all()] == ["a", "b"]
        assert manager.describe("a").available_versions == [1]
        with pytest.raises(ModelNotReady):
            manager.resolve("a")  # never routed to a broken pipeline
        assert manager.resolve("b").version == 1
    await manager.settle()
    assert loader.load_calls == 2 and not broken.model.closed  # nothing was retired or reloaded by reading
    broken.model.fail("the generation worker process stopped")  # the report repairs
    await manager.settle()
    assert broken.model.closed and loader.load_calls == 3
    assert manager.resolve("a") is not broken


async def test_unload_answers_once_routing_stopped_while_a_request_drains(tmp_path: Path, manager: ModelManager) -> None:
    write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    async with manager.lease("m") as instance:
        view = await asyncio.wait_for(manager.unload_model("m"), WAIT_S)  # returns with the lease still held
        assert [v.state for v in view.versions] == [VersionState.UNLOADING]
        with pytest.raises(ModelNotReady):
            manager.resolve("m")
        assert not instance.model.closed
    await manager.settle()
    assert instance.model.closed
    assert version(manager, "m", 1).state is VersionState.END


async def test_explicit_load_overtaken_by_a_change_on_disk_says_so(tmp_path: Path, manager: ModelManager,
                                                                  loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    gate = loader.hold("m")
    explicit = asyncio.create_task(manager.load_model("m"))
    await gate.wait_started()
    assert version(manager, "m", 1).state is VersionState.AVAILABLE  # the explicit reload is pending only
    (path / "1" / "weights.txt").write_text("newer")
    await manager.rescan(wait=False)  # the watcher's change queues behind the explicit load
    gate.open()
    with pytest.raises(Conflict, match="changed while it loaded"):
        await explicit
    await manager.settle()
    assert manager.resolve("m").model.weights == "newer"


async def test_failed_calls_leave_no_record(tmp_path: Path, manager: ModelManager) -> None:
    write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    for model_id in ("m/1", "missing", "./m", "m/", "a//m"):
        with pytest.raises(ModelNotFound):
            await manager.load_model(model_id)
        with pytest.raises(ModelNotFound):
            manager.describe(model_id)
    assert [v.model_id for v in manager.describe_all()] == ["m"]
    assert sorted(manager._models) == ["m"]


async def test_load_with_a_config_override(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    assert manager.effective_config("m")["embeddings"]["normalize"] is True
    before = manager.resolve("m")

    with pytest.raises(BadRequest, match="/embeddings/pooling"):
        await manager.load_model("m", config={**EMBED, "embeddings": {"pooling": "max"}})
    assert manager.resolve("m") is before and loader.load_calls == 1  # a refused override changes nothing

    await manager.load_model("m", config={**EMBED, "embeddings": {"normalize": False}})
    assert manager.effective_config("m")["embeddings"]["normalize"] is False
    write_version(path, 2)
    await apply(manager)  # the override outlives watcher changes ...
    assert manager.resolve("m").version == 2
    assert manager.effective_config("m")["embeddings"]["normalize"] is False
    await manager.load_model("m")  # ... until an explicit load without one
    assert manager.effective_config("m")["embeddings"]["normalize"] is True


async def test_a_slow_load_does_not_stall_rescans_or_releases(tmp_path: Path, loader: FakeLoader) -> None:
    manager = ModelManager(tmp_path, loader, load_workers=2)
    try:
        keep = write_model(tmp_path, "keep", versions=(1, 2), config={**EMBED, "model_version_policy": {"all": {}}})
        await apply(manager)
        retired = manager.resolve("keep", 1)
        slow = [loader.hold(name) for name in ("slow-a", "slow-b")]
        for name in ("slow-a", "slow-b"):  # as many slow loads as there are load workers
            write_model(tmp_path, name, config=EMBED)
        await manager.rescan(wait=False)
        for gate in slow:
            await gate.wait_started()
        # Meanwhile a policy edit retires version 1: the rescan and the release must not wait for the loads.
        (keep / "config.json").write_text(json.dumps({**EMBED, "model_version_policy": {"specific": {"versions": [2]}}}))
        await asyncio.wait_for(manager.rescan(wait=False), WAIT_S)
        await wait_until(lambda: retired.model.closed, "version 1 released while both load workers are busy")
        await wait_until(lambda: version(manager, "keep", 1).state is VersionState.END, "version 1 ended")
        for gate in slow:
            gate.open()
        await manager.settle()
        assert manager.describe("slow-a").available_versions == [1]
    finally:
        for gate in loader.gates.values():
            gate.open()
        await manager.close()


async def test_explicit_calls_have_exact_outcomes(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    gate = loader.hold("m")
    load = asyncio.create_task(manager.load_model("m"))
    await gate.wait_started()
    results = await asyncio.gather(manager.load_model("m"), manager.unload_model("m"), return_exceptions=True)
    assert [type(r) for r in results] == [Conflict, Conflict]  # one explicit call per model at a time
    assert all(r.code == "model_busy" for r in results)
    gate.open()
    await load
    # unload returns without waiting for drains, so repeated unloads all succeed, in order
    views = await asyncio.gather(*(manager.unload_model("m") for _ in range(3)))
    assert [v.state for view in views for v in view.versions] == [VersionState.UNLOADING] * 3
    await manager.settle()
    assert version(manager, "m", 1).state is VersionState.END
    await manager.load_model("m")
    assert version(manager, "m", 1).state is VersionState.AVAILABLE


async def test_a_client_hanging_up_does_not_cancel_an_explicit_load(tmp_path: Path, manager: ModelManager,
                                                                    loader: FakeLoader) -> None:
    write_model(tmp_path, "m", config=EMBED)
    await apply(manager)
    gate = loader.hold("m")
    call = asyncio.create_task(manager.load_model("m"))
    await gate.wait_started()
    call.cancel()  # what Sanic does to the handler when the client disconnects
    gate.open()
    with pytest.raises(asyncio.CancelledError):
        await call
    await manager.settle()
    assert version(manager, "m", 1).pending == ""  # not stuck "reloading"
    assert manager.resolve("m").model is loader.loaded[-1]  # the load finished and was swapped in
    assert [m.closed for m in loader.loaded] == [True, False]
    await manager.load_model("m")  # the claim was released


async def test_a_failed_explicit_load_changes_nothing_that_serves(tmp_path: Path, manager: ModelManager,
                                                                 loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", versions=(1, 2), config={**EMBED, "model_version_policy": {"all": {}}})
    await apply(manager)
    serving = {n: manager.resolve("m", n) for n in (1, 2)}
    (path / "1" / "weights.txt").write_text("corrupt")
    with pytest.raises(BadRequest, match="failed to load 'm'"):
        await manager.load_model("m", config={**EMBED, "model_version_policy": {"all": {}},
                                              "embeddings": {"normalize": False}})
    await manager.settle()
    assert {n: manager.resolve("m", n) for n in (1, 2)} == serving  # version 2's fresh copy was not swapped in
    assert manager.effective_config("m")["embeddings"]["normalize"] is True
    assert version(manager, "m", 1).state is VersionState.AVAILABLE and "reload failed" in version(manager, "m", 1).error_message
    assert version(manager, "m", 2).pending == ""


async def test_a_drain_that_ended_under_an_overtaken_load_shows_end(tmp_path: Path, manager: ModelManager,
                                                                    loader: FakeLoader) -> None:
    policy_all = {**EMBED, "model_version_policy": {"all": {}}}
    path = write_model(tmp_path, "m", versions=(1, 2), config=policy_all)
    await apply(manager)
    gate = loader.hold("m")
    async with manager.lease("m", 1):
        await manager.unload_model("m")
        explicit = asyncio.create_task(manager.load_model("m"))
        await gate.wait_started()
    await wait_until(lambda: 1 not in manager._models["m"].draining, "version 1's drain ended")
    (path / "config.json").write_text(json.dumps({**EMBED, "model_version_policy": {"specific": {"versions": [2]}}}))
    await manager.rescan(wait=False)
    gate.open()
    with pytest.raises(Conflict):
        await explicit
    await manager.settle()
    assert version(manager, "m", 1).state is VersionState.END  # not UNLOADING for good
    assert version(manager, "m", 2).state is VersionState.AVAILABLE


async def test_close_discards_loads_under_way(tmp_path: Path, loader: FakeLoader) -> None:
    manager = ModelManager(tmp_path, loader)
    write_model(tmp_path, "m", config=EMBED)
    gate = loader.hold("m")
    await manager.rescan(wait=False)
    await gate.wait_started()
    closing = asyncio.create_task(manager.close())
    await asyncio.sleep(0)
    gate.open()
    await asyncio.wait_for(closing, WAIT_S)
    assert loader.loaded and all(m.closed for m in loader.loaded)  # loaded after close began: released unused


async def test_a_removed_model_leaves_no_state_series(tmp_path: Path, manager: ModelManager) -> None:
    from server import metrics

    path = write_model(tmp_path, "gone", versions={1: "corrupt"}, config=EMBED)
    await apply(manager)
    assert version(manager, "gone", 1).state is VersionState.END

    def series() -> list:
        return [s for s in metrics.VERSION_STATE.collect()[0].samples if s.labels["model"] == "gone"]
    assert series()
    (path / "1" / "weights.txt").unlink()
    (path / "1").rmdir()
    (path / "config.json").unlink()
    path.rmdir()
    await apply(manager)
    assert series() == []


async def test_an_explicit_rescan_waits_for_loads_the_watcher_started(tmp_path: Path, manager: ModelManager,
                                                                     loader: FakeLoader) -> None:
    write_model(tmp_path, "m", config=EMBED)
    gate = loader.hold("m")
    await manager.rescan(wait=False)  # the watcher's rescan: it found the model and started loading
    await gate.wait_started()
    reload = asyncio.create_task(manager.rescan())  # /v1/config/reload: its own diff is empty
    for _ in range(20):
        await asyncio.sleep(0)
    assert not reload.done()  # it cannot answer while the load it did not start is still under way
    gate.open()
    await asyncio.wait_for(reload, WAIT_S)
    assert version(manager, "m", 1).state is VersionState.AVAILABLE
