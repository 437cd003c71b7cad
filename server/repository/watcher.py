"""watchdog events -> debounced rescans on the event loop, plus a periodic rescan as a fallback."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Callable

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.polling import PollingObserver

from server.repository.manager import ModelManager

log = structlog.get_logger("server.repository")


class _Notify(FileSystemEventHandler):
    def __init__(self, notify: Callable[[], None]) -> None:
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type not in ("opened", "closed_no_write"):  # reads change nothing
            self._notify()


class RepositoryWatcher:
    """Acts on a change once the repository has been quiet for `settle` seconds, so a model being
    copied in is not loaded half-written; rescans every `rescan_interval` seconds regardless."""

    def __init__(self, manager: ModelManager, root: Path, *, settle: float, rescan_interval: float) -> None:
        self._manager = manager
        self._root = Path(root)
        self._settle = settle
        self._rescan_interval = rescan_interval
        self._changed = asyncio.Event()

    def _start_observer(self, notify: Callable[[], None]) -> Observer:
        handler = _Notify(notify)
        try:
            observer = Observer()
            observer.schedule(handler, str(self._root), recursive=True)
            observer.start()
        except OSError as exc:  # e.g. inotify watch limit reached: fall back to polling
            log.warning("watcher_fallback_polling", error=str(exc))
            observer = PollingObserver(timeout=self._settle)
            observer.schedule(handler, str(self._root), recursive=True)
            observer.start()
        return observer

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        observer = self._start_observer(lambda: loop.call_soon_threadsafe(self._changed.set))
        log.info("watcher_started", root=str(self._root), settle_s=self._settle, rescan_s=self._rescan_interval)
        try:
            while True:
                try:
                    await asyncio.wait_for(self._changed.wait(), timeout=self._rescan_interval)
                except TimeoutError:
                    pass  # periodic rescan
                while self._changed.is_set():  # wait for quiet
                    self._changed.clear()
                    await asyncio.sleep(self._settle)
                try:
                    await self._manager.rescan(wait=False)
                except Exception:
                    log.exception("rescan_failed")
        finally:
            observer.stop()
            observer.join(timeout=5)
