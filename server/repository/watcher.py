"""watchdog events -> rescans on the event loop: debounced, with a ceiling, plus a periodic rescan."""

from __future__ import annotations

import asyncio
import os
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable

import structlog
from watchdog.events import FileSystemEvent, FileSystemEventHandler
from watchdog.observers import Observer
from watchdog.observers.api import BaseObserver
from watchdog.observers.polling import PollingObserverVFS

if TYPE_CHECKING:
    from server.repository.manager import ModelManager

log = structlog.get_logger("server.repository")


class _Notify(FileSystemEventHandler):
    def __init__(self, notify: Callable[[Iterable[Path]], None]) -> None:
        self._notify = notify

    def on_any_event(self, event: FileSystemEvent) -> None:
        if event.event_type in ("opened", "closed_no_write"):  # reads change nothing
            return
        # A rename publishes atomically: it is a change, but nothing is left half-written by it.
        paths = () if event.event_type == "moved" else (Path(os.fsdecode(event.src_path)),)
        self._notify(paths)


class _EventLog:
    """Written paths with their monotonic times: filled by the observer thread, read by the loop."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._written: dict[Path, float] = {}
        self._first: float | None = None  # first event not yet covered by a rescan
        self._last: float | None = None

    def record(self, paths: Iterable[Path], now: float) -> bool:
        """Note an event; True when it is the first one since the last rescan (the loop must wake)."""
        with self._lock:
            for path in paths:
                self._written[path] = now
            self._last = now
            if self._first is not None:
                return False
            self._first = now
            return True

    def pending(self) -> tuple[float, float] | None:
        """(first, last) event times not yet covered by a rescan, or None."""
        with self._lock:
            return None if self._first is None else (self._first, self._last)

    def take(self, now: float, settle: float) -> frozenset[Path]:
        """Start a rescan: the paths written within the last `settle` seconds, which the rescan holds
        back. They stay pending, so that a later rescan applies them once they have settled."""
        with self._lock:
            self._written = {p: t for p, t in self._written.items() if t > now - settle}
            self._first = now if self._written else None
            return frozenset(self._written)


class RepositoryWatcher:
    """Acts on a change once the repository has been quiet for `settle` seconds, so a model being
    copied in is not loaded half-written, but at the latest `settle_max` seconds after the first
    change, so a steady trickle of writes cannot stall it; then what is still being written is held
    back by the manager. Rescans every `rescan_interval` seconds whatever happens."""

    def __init__(self, manager: ModelManager, root: Path, *, settle: float, rescan_interval: float,
                 settle_max: float = 10.0) -> None:
        self._manager = manager
        self._root = Path(root)
        self._settle = settle
        self._settle_max = settle_max
        self._rescan_interval = rescan_interval
        self._changed = asyncio.Event()
        self._events = _EventLog()

    def _start_observer(self, handler: FileSystemEventHandler) -> BaseObserver:
        try:
            observer = Observer()
            observer.schedule(handler, str(self._root), recursive=True, follow_symlink=False)
            observer.start()
        except OSError as exc:  # e.g. inotify watch limit reached: fall back to polling
            log.warning("watcher_fallback_polling", error=str(exc))
            # lstat: the polling snapshot must not walk through links (a link to / would walk the disk).
            observer = PollingObserverVFS(os.lstat, os.scandir, polling_interval=self._settle)
            observer.schedule(handler, str(self._root), recursive=True)
            observer.start()
        return observer

    def _due(self, next_periodic: float) -> float:
        """When the next rescan is due: periodic, or quiet for settle, or settle_max after the first change."""
        pending = self._events.pending()
        if pending is None:
            return next_periodic
        first, last = pending
        return min(next_periodic, last + self._settle, first + self._settle_max)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()

        def notify(paths: Iterable[Path]) -> None:  # observer thread
            if self._events.record(paths, time.monotonic()):
                loop.call_soon_threadsafe(self._changed.set)

        observer = self._start_observer(_Notify(notify))
        log.info("watcher_started", root=str(self._root), settle_s=self._settle, settle_max_s=self._settle_max,
                 rescan_s=self._rescan_interval)
        next_periodic = time.monotonic() + self._rescan_interval
        try:
            while True:
                self._changed.clear()  # before reading the state: a later first event sets it again
                now = time.monotonic()
                due = self._due(next_periodic)
                if now < due:
                    try:
                        await asyncio.wait_for(self._changed.wait(), timeout=due - now)
                    except TimeoutError:
                        pass
                    continue
                if now >= next_periodic:  # the periodic schedule ignores events
                    next_periodic = now + self._rescan_interval
                await self._rescan(self._events.take(now, self._settle))
        finally:
            observer.stop()
            observer.join(timeout=5)

    async def _rescan(self, unsettled: frozenset[Path]) -> None:
        try:
            await self._manager.rescan(wait=False, unsettled=unsettled)
        except Exception:
            log.exception("rescan_failed")

