"""Per-request deadlines: off unless --request-timeout or a model's request_timeout_s sets one.

Expiry cancels the awaited work (a generation's engine requests are cancelled when their iterator
closes) and answers 504 in the route's envelope; for a stream already under way, an error frame."""

from __future__ import annotations

import asyncio
import time
from typing import AsyncIterator, Awaitable, TypeVar

from sanic import Request

from server.errors import DeadlineExceeded
from server.repository.manager import Instance

T = TypeVar("T")


def deadline_for(request: Request, instance: Instance) -> float | None:
    """Seconds this request may take on this model, or None for no deadline."""
    own = instance.config.request_timeout_s
    return own if own is not None else request.app.ctx.settings.request_timeout_s


def _expired(seconds: float) -> DeadlineExceeded:
    return DeadlineExceeded(f"The request did not finish within its deadline of {seconds:g} s and was cancelled")


async def within(seconds: float | None, work: Awaitable[T]) -> T:
    if seconds is None:
        return await work
    try:
        return await asyncio.wait_for(work, seconds)
    except TimeoutError:
        raise _expired(seconds) from None


async def stream_within(seconds: float | None, events: AsyncIterator[T]) -> AsyncIterator[T]:
    """The events of `events` until the deadline; then DeadlineExceeded (closing `events` cancels its work)."""
    if seconds is None:
        async for event in events:
            yield event
        return
    end = time.monotonic() + seconds
    try:
        while True:
            try:
                event = await asyncio.wait_for(anext(events), max(0.0, end - time.monotonic()))
            except StopAsyncIteration:
                return
            except TimeoutError:
                raise _expired(seconds) from None
            yield event
    finally:
        await events.aclose()
