"""Stop strings on streamed text: hold back what could still become a stop string, so that a stop
string never leaks into the output, even when it arrives split across tokens."""

from __future__ import annotations


class StopStringFilter:
    def __init__(self, stops: list[str], *, include_stop: bool = False) -> None:
        self._stops = [s for s in stops if s]
        self._failures = [_prefix_function(s) for s in self._stops]
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
        """Longest proper prefix of any stop string that ends the buffer. A Knuth-Morris-Pratt scan of the
        buffer's last len(stop) - 1 characters: O(len(stop)) per stop, where trying every prefix length
        with endswith was O(len(stop)^2)."""
        best = 0
        for stop, failure in zip(self._stops, self._failures):
            state = 0  # length of the longest prefix of `stop` that ends the text scanned so far
            for char in buffer[max(len(buffer) - len(stop) + 1, 0) :] if len(stop) > 1 else "":
                while state and stop[state] != char:
                    state = failure[state - 1]
                if stop[state] == char:
                    state += 1
                if state == len(stop):  # cannot happen (feed found no stop in the buffer); stay proper
                    state = failure[state - 1]
            best = max(best, state)
        return best


def _prefix_function(text: str) -> list[int]:
    """failure[i]: length of the longest proper prefix of text[: i + 1] that is also its suffix."""
    failure = [0] * len(text)
    state = 0
    for i in range(1, len(text)):
        while state and text[i] != text[state]:
            state = failure[state - 1]
        if text[i] == text[state]:
            state += 1
        failure[i] = state
    return failure
