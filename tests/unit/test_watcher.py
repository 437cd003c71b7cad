"""The watcher on a real folder with a fake manager: settling has a ceiling, periodic rescans keep
their schedule, and what is still being written is named to the manager."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from pathlib import Path
from typing import AsyncIterator, Callable

import pytest

from server.repository.watcher import RepositoryWatcher

BOUND = 20.0  # seconds: only a failure bound, never a correctness wait


class FakeManager:
    """Records rescan calls; tests wait for a call that satisfies a condition."""

    def __init__(self) -> None:
        self.calls: list[frozenset[Path]] = []
        self._called = asyncio.Event()

    async def rescan(self, *, wait: bool = True, unsettled: frozenset[Path] = frozenset()) -> None:
        assert wait is False
        self.calls.append(unsettled)
        self._called.set()

    async def wait_for_call(self, condition: Callable[[list[frozenset[Path]]], bool]) -> None:
        async def until() -> None:
            while not condition(self.calls):
                self._called.clear()
                await self._called.wait()

        await asyncio.wait_for(until(), BOUND)


@contextlib.asynccontextmanager
async def watching(manager: FakeManager, root: Path, **timing: float) -> AsyncIterator[None]:
    task = asyncio.create_task(RepositoryWatcher(manager, root, **timing).run())
    # One turn of the loop runs the task up to its first wait, and the observer's start() adds its
    # inotify watches synchronously: from here on no write is missed.
    await asyncio.sleep(0)
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


@contextlib.contextmanager
def rewritten_forever(path: Path, every: float = 0.05):
    """A thread that rewrites `path` every `every` seconds until the block ends."""
    stop = threading.Event()

    def write() -> None:
        count = 0
        while not stop.is_set():
            count += 1
            path.write_text(f"line {count}\n")
            stop.wait(every)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


@pytest.fixture
def root(tmp_path: Path) -> Path:
    return tmp_path.resolve()  # event paths are under the resolved root


async def test_a_change_in_a_quiet_repository_is_applied_once_settled(root: Path) -> None:
    manager = FakeManager()
    async with watching(manager, root, settle=0.3, settle_max=60.0, rescan_interval=3600.0):
        (root / "model.txt").write_text("x")
        await manager.wait_for_call(lambda calls: len(calls) >= 1)
    assert manager.calls[0] == frozenset()  # quiet for `settle`: nothing is still being written


async def test_continuous_writes_still_give_a_rescan_within_the_ceiling(root: Path) -> None:
    manager = FakeManager()
    log = root / "server.log"
    async with watching(manager, root, settle=0.3, settle_max=1.0, rescan_interval=3600.0):
        with rewritten_forever(log):
            await manager.wait_for_call(lambda calls: len(calls) >= 1)
            # (c) the file being written is named as unsettled, so the manager holds it back
            await manager.wait_for_call(lambda calls: any(log in unsettled for unsettled in calls))
        # A rescan that held the file back is followed by another one: once the writes have stopped,
        # one that holds nothing back applies it.
        held = next(i for i, unsettled in enumerate(manager.calls) if log in unsettled)
        await manager.wait_for_call(lambda calls: any(log not in unsettled for unsettled in calls[held + 1:]))


async def test_periodic_rescans_keep_their_schedule_while_writes_go_on(root: Path) -> None:
    manager = FakeManager()
    async with watching(manager, root, settle=0.3, settle_max=3600.0, rescan_interval=0.5):
        with rewritten_forever(root / "server.log"):
            await manager.wait_for_call(lambda calls: len(calls) >= 3)
