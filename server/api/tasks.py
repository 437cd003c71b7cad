"""Which model a request uses, and whether it serves the route's task."""

from __future__ import annotations

from server.errors import BadRequest
from server.repository.manager import Instance, ModelManager

ROUTES = {"text_generation": "chat/completions and completions", "embeddings": "embeddings and embed",
          "rerank": "rerank"}


def check_task(instance: Instance, task: str, route: str) -> None:
    if instance.task != task:
        raise BadRequest(
            f"The model '{instance.model_id}' serves task {instance.task} ({ROUTES[instance.task]}), "
            f"not {task}: it cannot be used with {route}", param="model", code="wrong_model_task")


def model_or_default(manager: ModelManager, body: dict, task: str) -> str:
    """Cohere's v1 SDK makes `model` optional: use the only available model of the task, if there is one."""
    if body.get("model"):
        return body["model"]
    candidates = [v.model_id for v in manager.describe_all() if v.task == task and v.available_versions]
    if len(candidates) == 1:
        return candidates[0]
    raise BadRequest(f"'model' is required: {len(candidates)} models serve {task}", param="model")
