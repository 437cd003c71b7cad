"""Server-sent events in the OpenAI style: `data: {json}\\n\\n` ... `data: [DONE]\\n\\n`.

An error after the headers went out cannot change the status code: it is sent as an error data
frame, then [DONE] (the openai client raises APIError with its message)."""

from __future__ import annotations

import json
from typing import AsyncGenerator

import structlog
from sanic import Request

from server.api.errors import as_server_error, openai_envelope

log = structlog.get_logger("server.api")


def _frame(payload: dict | str) -> bytes:
    data = payload if isinstance(payload, str) else json.dumps(payload, ensure_ascii=False, separators=(",", ":"))
    return f"data: {data}\n\n".encode()


async def stream_events(request: Request, events: AsyncGenerator[dict, None]) -> None:
    """Send the first event before the headers, so that errors raised before any output (bad model,
    bad input) still get a proper status code. The response is sent here: the handler returns None
    (Sanic logs an error when a handler returns a response it has already streamed)."""
    first = await anext(events)
    response = await request.respond(content_type="text/event-stream",
                                     headers={"cache-control": "no-cache", "x-request-id": request.ctx.request_id})
    try:
        await response.send(_frame(first))
        async for event in events:
            await response.send(_frame(event))
    except Exception as exc:  # noqa: BLE001 - after the headers, every error becomes an error frame
        error = as_server_error(exc)
        if error.status >= 500 and error is not exc:
            log.exception("stream_failed", path=request.path, request_id=request.ctx.request_id)
        await response.send(_frame(openai_envelope(error)))
    finally:
        await events.aclose()  # on client disconnect too: cancels the generation
    await response.send(_frame("[DONE]"))
    await response.eof()
