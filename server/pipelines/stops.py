"""Stop strings on streamed text: hold back what could still become a stop string, so that a stop
string never leaks into the output, even when it arrives split across tokens."""

from __future__ import annotations


class StopStringFilter:
    def __init__(self, stops: list[str], *, include_stop: bool = False) -> None:
        self._stops = [s for s in stops if s]
        self._include = include_stop
        self._held = ""
        self.stopped = False

    def feed(self, text: str) -> str:
        """Text that is safe to emit now. Sets `stopped` once a stop string has appeared."""
        if self.stopped:
            return ""
        if not self._stops:
            return text
        buffer = self._held + text
        hits = [(buffer.find(s), s) for s in self._stops if s in buffer]
        if hits:
            position, stop = min(hits)
            self.stopped = True
            self._held = ""
            return buffer[: position + (len(stop) if self._include else 0)]
        keep = self._longest_stop_prefix_suffix(buffer)
        self._held = buffer[len(buffer) - keep :] if keep else ""
        return buffer[: len(buffer) - keep]

    def flush(self) -> str:
        """At the end of generation, held text that never became a stop string is output."""
        held, self._held = self._held, ""
        return "" if self.stopped else held

    def _longest_stop_prefix_suffix(self, buffer: str) -> int:
        best = 0
        for stop in self._stops:
            for length in range(min(len(stop) - 1, len(buffer)), best, -1):
                if buffer.endswith(stop[:length]):
                    best = length
                    break
        return best
