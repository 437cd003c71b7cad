"""A tokenizer that several threads may share, and the thread that prepares a model's requests.

openvino_genai.Tokenizer deadlocked the server when two threads called it at once (2026.4.1, seen
with 8 concurrent chat requests preparing their prompts on worker threads: one thread sat inside
encode() holding the GIL while waiting for the other, which needed the GIL to finish). So every call
on a shared tokenizer takes its lock; waiting on a Python lock releases the GIL.
"""

from __future__ import annotations

import functools
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import openvino_genai as ov_genai

from server.pipelines import ir


class SharedTokenizer:
    def __init__(self, path: Path | str) -> None:
        self._tokenizer = ov_genai.Tokenizer(str(path), **ir.PRIVATE_WEIGHTS)
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._tokenizer, name)
        if not callable(attribute):
            return attribute

        @functools.wraps(attribute)
        def locked(*args: Any, **kwargs: Any) -> Any:
            with self._lock:
                return attribute(*args, **kwargs)

        return locked


def preparation_thread(name: str) -> ThreadPoolExecutor:
    """One model's thread for request preparation (templating, tokenizing, chunking), started now. With
    threads of the default executor, created on demand while others tokenized, a burst of 8 concurrent
    chats hung the whole process about 1 time in 3 (openvino-genai 2026.4.1); one long-lived thread per
    model did not hang in 16 bursts."""
    executor = ThreadPoolExecutor(1, thread_name_prefix=f"prepare-{name}")
    executor.submit(int).result()
    return executor
