"""Large request bodies are parsed in a helper process.

json.loads holds the GIL for its whole run: 100,000 chat messages (3.5 MB) took 50-160 ms, during which
a thread cannot help, the event loop stalled and even /v2/health/live waited. In a process of its own
the parse and the bounds walk cost the server nothing; a body within bounds comes back pickled (a
few milliseconds even for 16 MB of text), one outside them comes back as its 400.
"""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

import structlog

from server.api.body import parse_json
from server.errors import BadRequest, ServerError
from server.settings import Limits

log = structlog.get_logger("server.api")


def _parse(raw: bytes, limits: Limits) -> tuple:
    """In the helper process: ("ok", body) or ("bad", message, param, code) (exceptions pickle poorly)."""
    try:
        return ("ok", parse_json(raw, limits))
    except BadRequest as error:
        return ("bad", error.message, error.param, error.code)


class ParsePool:
    def __init__(self) -> None:
        self._pool: ProcessPoolExecutor | None = None

    def start(self) -> None:
        # forkserver: never fork the server itself, whose OpenVINO threads a fork would leave broken.
        self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("forkserver"))
        self._pool.submit(int)  # start the process now, not on the first large request

    async def parse(self, raw: bytes, limits: Limits) -> dict[str, Any]:
        if self._pool is None:
            self.start()
        pool = self._pool
        try:
            result = await asyncio.get_running_loop().run_in_executor(pool, _parse, raw, limits)
        except BrokenProcessPool:  # the helper died (killed, out of memory): the next call starts a new one
            if self._pool is pool:  # not already replaced by a request that failed the same way
                log.error("parse_process_died")
                pool.shutdown(wait=False, cancel_futures=True)
                self._pool = None
            raise ServerError("The request body could not be parsed; the error was logged") from None
        if result[0] == "bad":
            raise BadRequest(result[1], param=result[2], code=result[3])
        return result[1]

    def close(self) -> None:
        if self._pool is not None:
            # wait=True: with wait=False the executor's atexit hook can race its own management thread
            # and print "Bad file descriptor" at exit. Nothing is queued by now, so this is quick.
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
