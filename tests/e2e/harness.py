"""Start the real server process on a temporary repository and poll its HTTP APIs."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import requests

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_models_dir() -> Path:
    """The folder tools/make_test_models.py filled (make test sets OVMS_TEST_MODELS); built here if missing."""
    path = Path(os.environ.get("OVMS_TEST_MODELS", REPO_ROOT / ".cache" / "test-models"))
    if not all((path / name / "1").is_dir() for name in ("tiny-chat", "tiny-embed", "tiny-rerank", "minilm")):
        subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "make_test_models.py"), str(path)], check=True)
    return path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate: Callable[[], Any], *, timeout: float = 30.0, interval: float = 0.1, what: str = "") -> Any:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except requests.RequestException as exc:  # not listening yet
            last = exc
        else:
            last = value
            if value:
                return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or predicate}; last value: {last!r}")


def model_gauge(server: "ServerProcess", name: str, model: str) -> float:
    """A per-model gauge from /metrics (0 before the model's first value)."""
    for line in server.get("/metrics").text.splitlines():
        if line.startswith(name + "{") and f'model="{model}"' in line:
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def active_generations(server: "ServerProcess", model: str) -> float:
    return model_gauge(server, "ovms_generation_requests_active", model)


def copy_model_with_config(source: Path, target: Path, config: dict) -> Path:
    """Publish a copy of `source` with its own config.json: staged beside `target`, then renamed in."""
    staging = target.parent / f".{target.name}"
    shutil.copytree(source, staging)
    (staging / "config.json").write_text(json.dumps(config))
    staging.rename(target)
    return target


def copy_model(source: Path, target: Path) -> Path:
    """Publish a model folder the documented safe way: copy to a hidden name, then rename."""
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.parent / f".{target.name}.incoming"
    shutil.copytree(source, staging)
    staging.rename(target)
    return target


class ServerProcess:
    def __init__(self, repository: Path, log_path: Path, *, settle: float = 0.5, rescan: float = 3.0,
                 settle_max: float = 2.0, extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
        self.repository = repository
        self.log_path = log_path
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self._args = [
            sys.executable, "-m", "server", "serve", "--model-repository", str(repository),
            "--port", str(self.port), "--log-format", "json",
            "--settle-seconds", str(settle), "--rescan-seconds", str(rescan), "--settle-max-seconds", str(settle_max),
            *extra_args,
        ]
        self._env = {**os.environ, **(env or {})}
        self.process: subprocess.Popen | None = None

    def start(self, *, ready_timeout: float = 120.0) -> "ServerProcess":
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(self._args, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT,
                                        env=self._env)
        wait_for(lambda: self._poll_alive() and self.get("/v2/health/ready").status_code == 200,
                 timeout=ready_timeout, what="server ready")
        return self

    def _poll_alive(self) -> bool:
        if self.process.poll() is not None:
            raise AssertionError(f"server exited with {self.process.returncode}:\n{self.log_path.read_text()[-4000:]}")
        return True

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()

    def url(self, path: str) -> str:
        return self.base_url + path

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.get(self.url(path), timeout=30, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return requests.post(self.url(path), timeout=120, **kwargs)

    # ------------------------------------------------------------- status helpers

    def index(self) -> dict[tuple[str, str | None], dict]:
        response = self.post("/v2/repository/index")
        response.raise_for_status()
        return {(e["name"], e.get("version")): e for e in response.json()}

    def version_states(self, model_id: str) -> dict[str, str]:
        response = self.get(f"/v1/models/{model_id}")
        if response.status_code == 404:
            return {}
        return {s["version"]: s["state"] for s in response.json()["model_version_status"]}

    def wait_states(self, model_id: str, expected: dict[str, str], timeout: float = 60.0) -> None:
        wait_for(lambda: self.version_states(model_id) == expected, timeout=timeout,
                 what=f"{model_id} states {expected} (now {self.version_states(model_id)})")

    def log_events(self, event: str | None = None) -> list[dict]:
        events = []
        for line in self.log_path.read_text().splitlines():
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                continue
            if event is None or record.get("event") == event:
                events.append(record)
        return events

    def worker_pids(self) -> list[int]:
        """Live generation worker processes the server started (python -m server.pipelines.generation_worker)."""
        pids = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
                cmdline = (stat.parent / "cmdline").read_bytes()
            except (OSError, ValueError, IndexError):
                continue
            if ppid == self.process.pid and b"generation_worker" in cmdline:
                pids.append(int(stat.parent.name))
        return pids

    def rss_mb(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        raise AssertionError("no VmRSS")


@contextlib.contextmanager
def running_server(root: Path, sources: dict[str, Path] | None = None, **options: Any) -> Iterator[ServerProcess]:
    """A real server on `root` (each model of `sources` published into it first, the safe way), stopped
    afterwards; its log must hold no traceback."""
    for model_id, source in (sources or {}).items():
        copy_model(source, root / model_id)
    log_path = root.parent / "server.log"
    process = ServerProcess(root, log_path, **options).start()
    try:
        yield process
    finally:
        process.stop()
    log = log_path.read_text()
    assert "Traceback" not in log, log[-4000:]
