"""The lifecycle rules of ModelManager, on a fake loader (no OpenVINO)."""

from __future__ import annotations

import asyncio
import json
import shutil
from pathlib import Path

import pytest

from server.errors import BadRequest, Conflict, ModelNotFound, ModelNotReady
from server.repository.manager import ModelManager
from server.repository.states import VersionState
from tests.unit.fakes import FakeLoader, write_model, write_version

EMBED = {"task": "embeddings"}


def states(manager: ModelManager, model_id: str) -> dict[int, str]:
    return {v.version: v.state.value for v in manager.describe(model_id).versions}


async def apply(manager: ModelManager) -> None:
    await manager.rescan()
    await manager.settle()


async def test_initial_load_serves_latest_version(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    write_model(tmp_path, "org/m", versions=(1, 2), config=EMBED)
    await manager.initial_load()
    assert manager.ready
    assert states(manager, "org/m") == {2: "AVAILABLE"}
    assert manager.resolve("org/m").model.weights == "w2"
    assert [m.weights for m in loader.live()] == ["w2"]


async def test_policies_all_and_specific(tmp_path: Path, manager: ModelManager) -> None:
    write_model(tmp_path, "all", versions=(1, 2, 3), config={**EMBED, "model_version_policy": {"all": {}}})
    write_model(tmp_path, "some", versions=(1, 2, 3), config={**EMBED, "model_version_policy": {"specific": {"versions": [1, 3]}}})
    await apply(manager)
    assert states(manager, "all") == {1: "AVAILABLE", 2: "AVAILABLE", 3: "AVAILABLE"}
    assert states(manager, "some") == {1: "AVAILABLE", 3: "AVAILABLE"}
    assert manager.resolve("some", 1).version == 1
    with pytest.raises(ModelNotFound):
        manager.resolve("some", 2)


async def test_new_version_is_loaded_before_old_is_retired(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    old = manager.resolve("m").model
    write_version(path, 2)
    await apply(manager)
    assert states(manager, "m") == {1: "END", 2: "AVAILABLE"}
    assert old.closed
    assert [m.weights for m in loader.live()] == ["w2"]


async def test_retired_version_drains_in_flight_requests(tmp_path: Path, manager: ModelManager) -> None:
    path = write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    async with manager.lease("m") as instance:
        write_version(path, 2)
        await manager.rescan()  # returns once the load is done and swapped in
        assert manager.resolve("m").version == 2  # new requests go to the new version
        assert states(manager, "m")[1] == "UNLOADING"
        assert not instance.model.closed  # still in use
    await manager.settle()
    assert instance.model.closed
    assert states(manager, "m")[1] == "END"


async def test_deleted_version_and_deleted_model(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", versions=(1, 2), config={**EMBED, "model_version_policy": {"all": {}}})
    write_model(tmp_path, "other", versions=(1,), config=EMBED)
    await apply(manager)
    shutil.rmtree(path / "2")
    await apply(manager)
    assert states(manager, "m") == {1: "AVAILABLE"}
    shutil.rmtree(path)
    await apply(manager)
    with pytest.raises(ModelNotFound):
        manager.describe("m")
    assert [m.path.parent.name for m in loader.live()] == ["other"]


async def test_invalid_config_keeps_serving_and_next_valid_edit_applies(tmp_path: Path, manager: ModelManager) -> None:
    path = write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    (path / "config.json").write_text('{"task": "embeddings", "embeddings": {"pooling": "max"}')  # truncated
    await apply(manager)
    (version,) = manager.describe("m").versions
    assert version.state is VersionState.AVAILABLE
    assert version.error_code == "INVALID_ARGUMENT"
    assert "config.json is invalid" in version.error_message
    assert manager.resolve("m").model.weights == "w1"
    (path / "config.json").write_text(json.dumps({"task": "embeddings", "embeddings": {"pooling": "mean"}}))
    await apply(manager)
    (version,) = manager.describe("m").versions
    assert (version.state, version.error_code) == (VersionState.AVAILABLE, "OK")
    assert manager.resolve("m").config.pipeline.settings.pooling == "mean"


async def test_invalid_config_of_a_new_model_shows_the_error(tmp_path: Path, manager: ModelManager) -> None:
    write_model(tmp_path, "m", versions=(1,), config={"task": "chat"})
    await apply(manager)
    (version,) = manager.describe("m").versions
    assert (version.state, version.error_code) == (VersionState.END, "INVALID_ARGUMENT")
    assert "/task" in version.error_message
    with pytest.raises(ModelNotReady):
        manager.resolve("m")


async def test_corrupt_version_fails_alone(tmp_path: Path, manager: ModelManager) -> None:
    write_model(tmp_path, "bad", versions={1: "corrupt"}, config=EMBED)
    write_model(tmp_path, "good", versions=(1,), config=EMBED)
    await apply(manager)
    (bad,) = manager.describe("bad").versions
    assert (bad.state, bad.error_code) == (VersionState.END, "UNKNOWN")
    assert states(manager, "good") == {1: "AVAILABLE"}


async def test_failed_new_version_keeps_the_old_one_serving(tmp_path: Path, manager: ModelManager) -> None:
    path = write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    write_version(path, 2, "corrupt")
    await apply(manager)
    assert states(manager, "m") == {1: "AVAILABLE", 2: "END"}
    assert manager.resolve("m").version == 1
    (path / "2" / "weights.txt").write_text("fixed")
    await apply(manager)
    assert states(manager, "m") == {1: "END", 2: "AVAILABLE"}


async def test_a_kept_version_that_crashes_is_loaded_again(tmp_path: Path, manager: ModelManager,
                                                          loader: FakeLoader) -> None:
    """v2 fails to load, so v1 keeps serving; when v1's pipeline then breaks, v1 itself is loaded again
    (v2 still fails): the model must not go down for good."""
    path = write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    write_version(path, 2, "corrupt")
    await apply(manager)
    kept = manager.resolve("m")
    assert kept.version == 1
    kept.model.fail("the generation worker process stopped")
    await manager.settle()
    assert kept.model.closed
    fresh = manager.resolve("m")
    assert fresh is not kept and fresh.version == 1 and fresh.model.weights == "w1"
    assert states(manager, "m") == {1: "AVAILABLE", 2: "END"}
    (path / "2" / "weights.txt").write_text("fixed")  # once v2 loads, the policy's version serves alone
    await apply(manager)
    assert states(manager, "m") == {1: "END", 2: "AVAILABLE"}
    assert manager.resolve("m").model.weights == "fixed"


async def test_a_model_whose_load_failed_says_so_to_requests(tmp_path: Path, manager: ModelManager) -> None:
    write_model(tmp_path, "bad", versions={1: "corrupt"}, config=EMBED)
    await apply(manager)
    with pytest.raises(ModelNotReady) as raised:
        manager.resolve("bad")
    assert raised.value.message == "The model 'bad' is not ready: version 1 failed to load"  # the loader's message


@pytest.mark.parametrize("raw, expected", [
    ("[" * 100_000, "nested"),
    ('{"task": "embeddings", "drain_timeout_s": ' + "9" * 5000 + "}", "digits"),
])
async def test_a_pathological_config_json_is_reported(tmp_path: Path, manager: ModelManager, raw: str,
                                                      expected: str) -> None:
    path = write_model(tmp_path, "m", versions=(1,))
    (path / "config.json").write_text(raw)
    await apply(manager)
    view = manager.describe("m")
    assert view.error is not None and expected in view.error
    (version,) = view.versions
    assert (version.state, version.error_code) == (VersionState.END, "INVALID_ARGUMENT")


async def test_corrupted_files_of_a_served_version_keep_the_loaded_copy(tmp_path: Path, manager: ModelManager) -> None:
    path = write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    (path / "1" / "weights.txt").write_text("corrupt")
    await apply(manager)
    (version,) = manager.describe("m").versions
    assert (version.state, version.error_code) == (VersionState.AVAILABLE, "UNKNOWN")
    assert manager.resolve("m").model.weights == "w1"


async def test_policy_only_edit_does_not_reload(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", versions=(1, 2), config=EMBED)
    await apply(manager)
    (path / "config.json").write_text(json.dumps({**EMBED, "model_version_policy": {"all": {}}}))
    await apply(manager)
    assert states(manager, "m") == {1: "AVAILABLE", 2: "AVAILABLE"}
    assert loader.load_calls == 2  # version 2 was not loaded again


async def test_settings_edit_reloads_with_swap(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    first = manager.resolve("m")
    (path / "config.json").write_text(json.dumps({**EMBED, "embeddings": {"normalize": False}}))
    await apply(manager)
    assert manager.resolve("m") is not first
    assert first.model.closed
    assert states(manager, "m") == {1: "AVAILABLE"}


async def test_load_overtaken_by_newer_change_is_discarded(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", versions={1: "old"}, config=EMBED)
    gate = loader.hold("m")
    first = asyncio.create_task(manager.rescan())
    await gate.wait_started()  # the load of "old" is under way
    (path / "1" / "weights.txt").write_text("new!")
    second = asyncio.create_task(manager.rescan())
    while manager._models["m"].stamp < 2:  # the newer change is scheduled before the old load ends
        await asyncio.sleep(0.01)
    gate.open()
    await asyncio.gather(first, second)
    await manager.settle()
    assert manager.resolve("m").model.weights == "new!"
    assert [m.weights for m in loader.loaded] == ["old", "new!"]
    assert loader.loaded[0].closed  # the overtaken load was released, never served


async def test_task_inferred_without_config(tmp_path: Path, manager: ModelManager) -> None:
    path = write_model(tmp_path, "m", versions=(1,))
    (path / "1" / "task.txt").write_text("rerank")
    write_model(tmp_path, "unknown", versions=(1,))
    await apply(manager)
    assert manager.resolve("m").task == "rerank"
    (version,) = manager.describe("unknown").versions
    assert version.error_code == "FAILED_PRECONDITION"
    assert "config.json" in version.error_message


async def test_model_without_versions_reports_why(tmp_path: Path, manager: ModelManager) -> None:
    write_model(tmp_path, "m", versions=(), config=EMBED)
    await apply(manager)
    view = manager.describe("m")
    assert view.versions == ()
    assert view.error == "no version folders"


async def test_concurrent_explicit_loads_one_wins_rest_conflict(tmp_path: Path, manager: ModelManager) -> None:
    write_model(tmp_path, "m", versions=(1,), config=EMBED, delay=0.2)
    await apply(manager)
    results = await asyncio.gather(*(manager.load_model("m") for _ in range(5)), return_exceptions=True)
    assert sum(not isinstance(r, Exception) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 4


async def test_explicit_unload_pins_until_explicit_load(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    path = write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    assert [v.state for v in (await manager.unload_model("m")).versions] == [VersionState.UNLOADING]
    await manager.settle()
    assert states(manager, "m") == {1: "END"}
    assert loader.live() == []
    write_version(path, 2)
    await apply(manager)  # the watcher does not bring it back
    assert states(manager, "m") == {1: "END"}
    with pytest.raises(ModelNotReady):
        manager.resolve("m")
    await manager.load_model("m")
    assert states(manager, "m") == {1: "END", 2: "AVAILABLE"}


async def test_explicit_load_errors(tmp_path: Path, manager: ModelManager) -> None:
    write_model(tmp_path, "bad", versions={1: "corrupt"}, config=EMBED)
    await apply(manager)
    with pytest.raises(BadRequest, match="failed to load 'bad'"):
        await manager.load_model("bad")
    for model_id in ("missing", "../etc", "/abs", "a/../b", ".hidden"):
        with pytest.raises(ModelNotFound):
            await manager.load_model(model_id)
    with pytest.raises(ModelNotFound):
        await manager.unload_model("missing")


async def test_broken_instance_is_retired_and_reloaded(tmp_path: Path, manager: ModelManager, loader: FakeLoader) -> None:
    write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    broken = manager.resolve("m").model
    broken.fail("the generation worker process exited (code -9)")
    with pytest.raises(ModelNotReady):  # the only version is reloading
        manager.resolve("m")
    await manager.settle()
    fresh = manager.resolve("m").model
    assert fresh is not broken and fresh.broken is None
    assert broken.closed
    assert loader.load_calls == 2
    assert states(manager, "m") == {1: "AVAILABLE"}


async def test_other_versions_serve_while_a_broken_one_reloads(tmp_path: Path, manager: ModelManager,
                                                              loader: FakeLoader) -> None:
    write_model(tmp_path, "m", versions=(1, 2), config={**EMBED, "model_version_policy": {"all": {}}})
    await apply(manager)
    manager.resolve("m", 2).model.fail("crashed")
    assert manager.resolve("m").version == 1  # another version keeps serving meanwhile
    await manager.settle()
    assert manager.resolve("m").version == 2
    assert loader.load_calls == 3


async def test_rescan_repairs_a_broken_instance_without_traffic(tmp_path: Path, manager: ModelManager,
                                                                 loader: FakeLoader) -> None:
    write_model(tmp_path, "m", versions=(1,), config=EMBED)
    await apply(manager)
    broken = manager.resolve("m").model
    broken.broken = "crashed"  # not reported (as if the callback were lost)
    await apply(manager)  # nothing changed on disk: the periodic rescan alone finds it
    assert broken.closed and loader.load_calls == 2
    assert states(manager, "m") == {1: "AVAILABLE"}


async def test_a_folder_that_cannot_be_listed_unloads_nothing(tmp_path: Path, manager: ModelManager,
                                                              loader: FakeLoader, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    write_model(tmp_path, "org/m", versions=(1,), config=EMBED)
    await apply(manager)
    serving = manager.resolve("org/m")
    real = os.scandir

    def scandir(path=".", *args):
        if Path(path) == tmp_path / "org":
            raise OSError(errno.EMFILE, "Too many open files", str(path))
        return real(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)
    await apply(manager)
    assert manager.resolve("org/m") is serving and not serving.model.closed
    assert states(manager, "org/m") == {1: "AVAILABLE"}
    monkeypatch.setattr(os, "scandir", real)
    await apply(manager)
    assert manager.resolve("org/m") is serving and loader.load_calls == 1  # readable again: nothing to do
