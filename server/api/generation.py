"""POST /v3/chat/completions and /v3/completions (also under /v3/v1)."""

from __future__ import annotations

import asyncio

import structlog

from sanic import Blueprint, Request
from sanic.response import HTTPResponse, json

from server.api.deadline import deadline_for, stream_within, within
from server.api.sse import stream_events
from server.api.tasks import check_task
from server.api.validation import read_body
from server.services import generation, generation_plan

TASK = "text_generation"

bp = Blueprint.group(
    Blueprint("generation", url_prefix="/v3"),
    Blueprint("generation_v1", url_prefix="/v3/v1"),
)


async def _serve(request: Request, schema: str, planner, route: str) -> HTTPResponse | None:
    body = await read_body(request, schema)
    if body.get("user"):
        request.ctx.user = body["user"]
    async with request.app.ctx.manager.lease(body["model"]) as instance:
        check_task(instance, TASK, route)
        structlog.contextvars.bind_contextvars(model=instance.model_id, version=instance.version)  # for failures
        model = instance.model
        # Chat templates and tokenization of a long prompt take seconds: not on the event loop.
        plan = await asyncio.get_running_loop().run_in_executor(
            model.preparation, planner, body["model"], model, body, request.app.ctx.settings.limits)
        await generation.check_structured_output(model, plan)
        deadline = deadline_for(request, instance)
        if body.get("stream"):
            await stream_events(request, stream_within(deadline, generation.run_stream(model, plan)))
            return None
        return json(await within(deadline, generation.run_unary(model, plan)))


async def chat_completions(request: Request) -> HTTPResponse | None:
    return await _serve(request, "chat_completions", generation_plan.plan_chat, "/v3/chat/completions")


async def completions(request: Request) -> HTTPResponse | None:
    return await _serve(request, "completions", generation_plan.plan_completion, "/v3/completions")


for _bp in bp.blueprints:
    _bp.add_route(chat_completions, "/chat/completions", methods=["POST"], name="chat_completions")
    _bp.add_route(completions, "/completions", methods=["POST"], name="completions")
