"""App factory: the Sanic app, its blueprints, listeners and error handler."""

from __future__ import annotations

import asyncio
import itertools

import structlog
from sanic import Sanic

from server.api.parse_pool import ParsePool
from server.api import cohere, embeddings, errors, generation, kserve, observability, openai, openapi, security, tfs
from server.pipelines.base import ModelLoader
from server.repository.manager import ModelManager
from server.repository.watcher import RepositoryWatcher
from server.settings import Settings

_app_names = itertools.count()
log = structlog.get_logger("server")


def create_app(settings: Settings, loader: ModelLoader | None = None, *, watch: bool = True) -> Sanic:
    """Build the app. `loader` defaults to the OpenVINO one; tests pass fakes. Without `watch`,
    the repository is scanned at start-up and on POST /v1/config/reload only."""
    if loader is None:
        from server.pipelines.loader import OpenVINOLoader  # imports OpenVINO: keep it off the unit-test path

        loader = OpenVINOLoader(settings.model_defaults, root=settings.model_repository)
    app = Sanic(f"ov_model_server_{next(_app_names)}", configure_logging=False)
    app.config.FALLBACK_ERROR_FORMAT = "json"
    # Sanic refuses a larger body from its Content-Length (413) before reading it.
    app.config.REQUEST_MAX_SIZE = settings.limits.max_body_bytes
    # Sanic cuts any response after RESPONSE_TIMEOUT (60 s by default) with a 503: unary generation
    # on a CPU, unloads and reloads legitimately take longer. Deadlines are ours (--request-timeout).
    app.config.RESPONSE_TIMEOUT = 10 * 365 * 24 * 3600
    app.config.KEEP_ALIVE_TIMEOUT = 75
    # SIGTERM: Sanic closes the listener, waits this long for open requests (streams too), then closes them.
    app.config.GRACEFUL_SHUTDOWN_TIMEOUT = settings.shutdown_timeout_s
    app.ctx.stopping = False
    app.ctx.settings = settings

    errors.install(app)
    observability.install(app)
    security.install(
        app, security.ApiKeys(settings.api_key_file, settings.api_key),
        security.BrowserPolicy(settings.allowed_origins, settings.allowed_methods, settings.allowed_headers),
        protect_metrics=settings.protect_metrics,
    )
    app.blueprint(tfs.bp)
    app.blueprint(kserve.bp)
    app.blueprint(openai.bp)
    app.blueprint(generation.bp)
    app.blueprint(embeddings.bp)
    app.blueprint(cohere.bp)
    app.blueprint(openapi.bp)

    app.ctx.parse_pool = ParsePool()

    @app.before_server_start
    async def start_repository(app: Sanic) -> None:
        app.ctx.parse_pool.start()
        manager = ModelManager(settings.model_repository, loader, load_workers=settings.load_workers)
        app.ctx.manager = manager
        # Serve health/live at once; /v2/health/ready turns 200 when the first scan's loads are done.
        app.ctx.initial_load = asyncio.get_running_loop().create_task(manager.initial_load())
        if watch:
            watcher = RepositoryWatcher(
                manager, settings.model_repository, settle=settings.settle_seconds, rescan_interval=settings.rescan_seconds,
                settle_max=settings.settle_max_seconds,
            )
            app.ctx.watcher = asyncio.get_running_loop().create_task(watcher.run())

    @app.before_server_stop
    async def stop_taking_requests(app: Sanic) -> None:
        app.ctx.stopping = True  # /v2/health/ready answers 503 from now on: load balancers drain first
        log.info("shutdown_started", timeout_s=settings.shutdown_timeout_s)

    @app.after_server_stop
    async def stop_repository(app: Sanic) -> None:
        for name in ("watcher", "initial_load"):
            task = getattr(app.ctx, name, None)
            if task is not None:
                task.cancel()
        await app.ctx.manager.close()
        app.ctx.parse_pool.close()

    return app
