"""API keys and browser safety, checked before any handler runs.

- API keys (optional): `--api-key-file` (one key per line, re-read when the file changes) and/or the
  API_KEY environment variable. With keys set, every /v3 route and every mutating /v1 and /v2 route
  needs `Authorization: Bearer <key>`; health, readiness, status reads, /openapi.json and (unless
  --protect-metrics) /metrics stay open.
- Browser safety: a POST with a body must be `application/json` (415 otherwise; curl's `-d` alone sends
  form data), so no cross-origin "simple" request (text/plain, form data) reaches a handler; a request carrying an Origin that
  --allowed-origins does not list gets 403, which also covers body-less POSTs (unload); CORS
  preflights are answered only for allowed origins.

Hand-written rather than sanic-ext: the rules are a few lines, and sanic-ext would also install its
own OpenAPI, health and validation machinery next to ours.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import time
from dataclasses import dataclass
from pathlib import Path

import structlog
from sanic import Request, Sanic
from sanic.response import HTTPResponse, empty

from server.errors import Forbidden, Unauthorized, UnsupportedMediaType

log = structlog.get_logger("server.api")

OPEN_ROUTES = ("/v2/health/", "/metrics", "/openapi.json")
MUTATING_STATUS_ROUTES = ("/v1/config/reload", "/v2/repository/models/")
_RELOAD_CHECK_S = 1.0  # how often the key file's stat is compared, at most


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class ApiKeys:
    """The accepted keys; the file is re-read when its size, mtime or inode changes."""

    def __init__(self, key_file: Path | None = None, env_key: str | None = None, *,
                 reload_check_s: float = _RELOAD_CHECK_S) -> None:
        self._file = key_file
        self._reload_check_s = reload_check_s
        self._env = [_digest(env_key.strip())] if env_key and env_key.strip() else []
        self._file_keys: list[bytes] = []  # SHA-256 digests of the keys
        self._stamp: tuple | None = None
        self._checked = float("-inf")
        if key_file is not None:
            self._reload(force=True)

    @property
    def enabled(self) -> bool:
        return bool(self._env) or self._file is not None

    def _reload(self, *, force: bool = False) -> None:
        try:
            st = os.stat(self._file)
        except OSError:
            if force:
                raise
            if self._file_keys:  # deleting the file revokes its keys (replace it by a rename to rotate)
                log.warning("api_keys_file_missing", file=str(self._file))
            self._file_keys, self._stamp = [], None
            return
        stamp = (st.st_size, st.st_mtime_ns, st.st_ino)
        if stamp == self._stamp:
            return
        lines = Path(self._file).read_text(encoding="utf-8").splitlines()
        keys = (line.strip() for line in lines)
        self._file_keys = [_digest(key) for key in keys if key and not key.startswith("#")]
        self._stamp = stamp
        log.info("api_keys_loaded", file=str(self._file), keys=len(self._file_keys))
        if not self._file_keys and not self._env:
            log.warning("api_keys_empty", file=str(self._file), message="no key is accepted until one is added")

    def accepts(self, authorization: str | None) -> bool:
        now = time.monotonic()
        if self._file is not None and now - self._checked >= self._reload_check_s:
            self._checked = now
            self._reload()
        scheme, _, given = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            return False
        candidate = _digest(given.strip())
        found = False
        for key in self._env + self._file_keys:  # no early exit; digests: equal lengths, no length leak
            found |= hmac.compare_digest(candidate, key)
        return found


@dataclass(frozen=True)
class BrowserPolicy:
    allowed_origins: tuple[str, ...] = ()  # "*" allows any origin
    allowed_methods: tuple[str, ...] = ("GET", "POST", "OPTIONS")
    allowed_headers: tuple[str, ...] = ("Authorization", "Content-Type", "X-Request-Id")

    def allows(self, origin: str) -> bool:
        return "*" in self.allowed_origins or origin in self.allowed_origins

    def cors_headers(self, origin: str) -> dict[str, str]:
        return {"Access-Control-Allow-Origin": "*" if "*" in self.allowed_origins else origin, "Vary": "Origin"}


def needs_key(request: Request, protect_metrics: bool) -> bool:
    path = request.path
    if path.startswith("/metrics"):
        return protect_metrics
    if path.startswith(OPEN_ROUTES):
        return False
    if path.startswith("/v3"):
        return True
    return request.method == "POST" and path.startswith(MUTATING_STATUS_ROUTES)


def _is_json(content_type: str) -> bool:
    """application/json or application/*+json; no Content-Type at all passes too (`requests.post(data=...)`):
    a browser can send a body without one, but then it sends an Origin, which the origin check refuses."""
    media = content_type.split(";", 1)[0].strip().lower()
    return not media or media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return bool(request.body) or (length not in (None, "0")) or "transfer-encoding" in request.headers


def install(app: Sanic, keys: ApiKeys, browser: BrowserPolicy, *, protect_metrics: bool = False) -> None:
    @app.on_request(priority=-10)  # after observability's start_request: refusals are logged and counted
    async def guard(request: Request) -> HTTPResponse | None:
        origin = request.headers.get("origin")
        if request.method == "OPTIONS" and origin and "access-control-request-method" in request.headers:
            if not browser.allows(origin):
                raise Forbidden(f"Cross-origin requests from {origin[:200]} are not allowed (see --allowed-origins)")
            return empty(status=204, headers={
                **browser.cors_headers(origin),
                "Access-Control-Allow-Methods": ", ".join(browser.allowed_methods),
                "Access-Control-Allow-Headers": ", ".join(browser.allowed_headers),
                "Access-Control-Max-Age": "600",
            })
        if origin and not browser.allows(origin):
            raise Forbidden(f"Cross-origin requests from {origin[:200]} are not allowed (see --allowed-origins)")
        if keys.enabled and needs_key(request, protect_metrics) and not keys.accepts(request.headers.get("authorization")):
            raise Unauthorized("A valid API key is required: send it as 'Authorization: Bearer <key>'")
        if request.method == "POST" and _has_body(request) and not _is_json(request.headers.get("content-type", "")):
            raise UnsupportedMediaType("Request bodies must be JSON: send 'Content-Type: application/json'")
        return None

    @app.on_response
    async def cors(request: Request, response: HTTPResponse) -> None:
        origin = request.headers.get("origin")
        if origin and browser.allowed_origins and browser.allows(origin):
            response.headers.update(browser.cors_headers(origin))
