"""Helpers shared by the benchmarks in tools/bench/: percentiles, a temporary one-model repository,
the server subprocess, command-line options, and table printing (plain text for the terminal, Markdown
for the README).

Run benchmarks from the project root with the project's interpreter, e.g.
`.venv/bin/python tools/bench/generation.py`. Nothing here imports the server package, so a benchmark
can measure the server over HTTP without paying for its imports.
"""

from __future__ import annotations

import argparse
import gc
import contextlib
import json
import math
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Awaitable, Callable, Iterable, Sequence, TypeVar

REPO_ROOT = Path(__file__).resolve().parents[2]


# ----------------------------------------------------------------------------- statistics


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) with linear interpolation between closest ranks (numpy's default);
    NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    if len(ordered) == 1:
        return float(ordered[0])
    rank = (len(ordered) - 1) * q / 100.0
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return float(ordered[low] + (ordered[high] - ordered[low]) * (rank - low))


def ms(seconds: float) -> float:
    return seconds * 1000.0


def fmt(value: float, digits: int = 1) -> str:
    """A number for a table cell: '-' for NaN/None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:.{digits}f}"


# ----------------------------------------------------------------------------- CPU accounting


def machine_busy_seconds() -> float:
    """CPU time all processes of the machine have used (Linux /proc/stat, every core; idle and iowait excluded)."""
    fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def process_cpu_seconds(pid: int | None = None) -> float:
    """User + system CPU time of one process (all its threads; default: this one)."""
    if pid is None:
        times = os.times()
        return times.user + times.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def process_rss_mb(pid: int) -> float:
    """Resident memory of one process in MB (VmRSS of /proc/PID/status); NaN when it has none (a zombie)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return math.nan


def descendants(pid: int) -> list[int]:
    """Live child processes of `pid`, recursively (the server's generation workers)."""
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            child, ppid = int(stat.parent.name), int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        parents.setdefault(ppid, []).append(child)
    found, todo = [], [pid]
    while todo:
        children = parents.get(todo.pop(), [])
        found.extend(children)
        todo.extend(children)
    return found


def tree_cpu_seconds(pid: int) -> float:
    """CPU time of a process and its live descendants."""
    total = 0.0
    for member in [pid, *descendants(pid)]:
        try:
            total += process_cpu_seconds(member)
        except OSError:  # exited meanwhile
            pass
    return total


class ForeignCPU:
    """How much CPU the rest of the machine used while measuring: the machine's busy time minus this
    process's and the given processes' (with their descendants). Far above zero means the numbers are
    not clean (on a 2-core machine, anything else running steals cores from the benchmark)."""

    def __init__(self, pids: Sequence[int] = ()) -> None:
        self.pids = list(pids)
        self._start = self._sample()

    def _sample(self) -> tuple[float, float]:
        own = process_cpu_seconds() + sum(tree_cpu_seconds(pid) for pid in self.pids)
        return machine_busy_seconds(), own

    def seconds(self) -> float:
        busy, own = self._sample()
        return max(0.0, (busy - self._start[0]) - (own - self._start[1]))


def wait_for_idle(max_wait: float, *, pids: Sequence[int] = (), window: float = 1.0, limit: float = 0.1,
                  quiet_windows: int = 2, say=None) -> bool:
    """Wait (up to max_wait seconds) until other processes use less than `limit` cores for `quiet_windows`
    windows in a row. True when idle; False when max_wait ran out (the caller measures anyway)."""
    deadline = time.monotonic() + max_wait
    quiet = 0
    announced = False
    while True:
        probe = ForeignCPU(pids)
        time.sleep(window)
        quiet = quiet + 1 if probe.seconds() < limit * window else 0
        if quiet >= quiet_windows:
            return True
        if time.monotonic() >= deadline:
            return False
        if not announced and say:
            say("other processes are using the CPU; waiting for the machine to be idle")
            announced = True


# ----------------------------------------------------------------------------- tables


def text_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A plain aligned table: first column left-aligned, the others right-aligned."""
    rows = [list(map(str, row)) for row in rows]
    widths = [max(len(str(h)), *(len(r[i]) for r in rows)) if rows else len(str(h)) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    out = [line(list(map(str, headers))), "  ".join("-" * w for w in widths)]
    out.extend(line(r) for r in rows)
    return "\n".join(out)


def markdown_table(headers: Sequence[str], rows: Iterable[Sequence[str]]) -> str:
    """A GitHub Markdown table, numbers right-aligned (every column but the first ones that hold text)."""
    rows = [list(map(str, row)) for row in rows]

    def numeric(i: int) -> bool:
        return all(_is_number(r[i]) for r in rows) if rows else False

    align = ["---:" if numeric(i) else ":---" for i in range(len(headers))]
    out = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    out.extend("| " + " | ".join(r) + " |" for r in rows)
    return "\n".join(out)


def _is_number(cell: str) -> bool:
    if cell == "-":
        return True
    try:
        float(cell.rstrip("x%"))
    except ValueError:
        return False
    return True


# ----------------------------------------------------------------------------- model repository


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def single_model_repository(model_dir: Path, model_id: str, parent: Path | None = None) -> Path:
    """A temporary repository holding only `model_dir` under `model_id` (e.g. "org/name"): its
    config.json is copied, its version folders are hard-linked file by file (copied across file
    systems). Not symlinked: the server follows no link that leaves its repository.
    Returns the repository root; the caller removes it (shutil.rmtree) when done."""
    model_dir = Path(model_dir).resolve()
    root = Path(tempfile.mkdtemp(prefix="bench-repo-", dir=parent))
    target = root / model_id
    target.mkdir(parents=True)
    if (model_dir / "config.json").is_file():
        shutil.copy2(model_dir / "config.json", target / "config.json")
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")]
    if not versions:
        shutil.rmtree(root)
        raise SystemExit(f"error: {model_dir} has no version folder (1/, 2/, ...)")
    for version in versions:
        shutil.copytree(version, target / version.name, copy_function=_link_or_copy)
    return root


def _link_or_copy(source: str, destination: str) -> None:
    try:
        os.link(source, destination)
    except OSError:  # another file system
        shutil.copy2(source, destination)


def latest_version_dir(model_dir: Path) -> Path:
    """The highest-numbered version folder of a model folder (what the default policy serves)."""
    versions = [p for p in Path(model_dir).iterdir() if p.is_dir() and p.name.isdigit() and not p.name.startswith("0")]
    if not versions:
        raise SystemExit(f"error: {model_dir} has no version folder (1/, 2/, ...)")
    return max(versions, key=lambda p: int(p.name))


def release_memory() -> None:
    """After `del pipeline`: collect, so that OpenVINO frees the compiled model before the next mode."""
    gc.collect()
    gc.collect()


# ----------------------------------------------------------------------------- command line


def bench_parser(doc: str) -> argparse.ArgumentParser:
    """A benchmark's parser, described by the first paragraph of its module docstring."""
    return argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                   formatter_class=argparse.RawDescriptionHelpFormatter)


def add_model_options(parser: argparse.ArgumentParser, modes: Sequence[str], default_model_dir: Path,
                      model_help: str) -> None:
    """--modes, --model-dir and --model-id: what to measure, and on which model."""
    parser.add_argument("--modes", nargs="+", choices=modes, default=list(modes), help="what to measure, in order")
    parser.add_argument("--model-dir", type=Path, default=default_model_dir, help=model_help)
    parser.add_argument("--model-id", help="model id in the server (default: the model folder's last two parts)")


def add_output_options(parser: argparse.ArgumentParser, json_help: str) -> None:
    """--json and --keep-server-log: what a run leaves behind besides its printed report."""
    parser.add_argument("--json", type=Path, help=json_help)
    parser.add_argument("--keep-server-log", type=Path, help="copy the server's log here")


def resolve_model_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> None:
    """After parsing: absolute model_dir (a usage error when it is not a folder), the default model_id
    and version_dir, the folder the server's default policy serves (and the raw modes load)."""
    args.model_dir = args.model_dir.resolve()
    if not args.model_dir.is_dir():
        parser.error(f"{args.model_dir} is not a folder")
    args.model_id = args.model_id or f"{args.model_dir.parent.name}/{args.model_dir.name}"
    args.version_dir = latest_version_dir(args.model_dir)


# ----------------------------------------------------------------------------- server subprocess


def _http_get(url: str, timeout: float = 5.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@dataclass
class ServerProcess:
    """`python -m server serve` on a repository and a free port, logs to a file. Use as a context
    manager (or call stop() in a finally): the process is terminated, then killed if it lingers."""

    repository: Path
    log_path: Path
    port: int = 0
    extra_args: tuple[str, ...] = ()
    # What runs `serve ...`: default `python -m server`; a wrapper script (profiling, patches) may stand in.
    launcher: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self.port = self.port or free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.process: subprocess.Popen | None = None
        self._log = None

    def start(self, *, ready_timeout: float = 180.0, model_ids: Sequence[str] = ()) -> "ServerProcess":
        args = [*(self.launcher or (sys.executable, "-m", "server")), "serve", "--model-repository", str(self.repository),
                "--port", str(self.port), "--log-format", "json", *self.extra_args]
        self._log = open(self.log_path, "wb")
        self.process = subprocess.Popen(args, cwd=REPO_ROOT, stdout=self._log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + ready_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log_tail()}")
            try:
                status, _ = _http_get(self.base_url + "/v2/health/ready", timeout=2.0)
            except OSError:
                status = 0
            if status == 200:
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"server not ready after {ready_timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)
        for model_id in model_ids:
            status, body = _http_get(f"{self.base_url}/v1/models/{model_id}")
            states = [s.get("state") for s in json.loads(body or b"{}").get("model_version_status", [])]
            if status != 200 or "AVAILABLE" not in states:
                raise RuntimeError(f"model {model_id} is not AVAILABLE (HTTP {status}: {body[:500]!r}):\n"
                                   f"{self.log_tail()}")
        return self

    def log_tail(self, chars: int = 4000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return ""

    def rss_mb(self) -> float:
        return process_rss_mb(self.process.pid)

    def cpu_seconds(self) -> float:
        """User + system CPU time the server process and its generation workers have used so far (Linux /proc)."""
        return tree_cpu_seconds(self.process.pid)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if self._log is not None:
            self._log.close()
            self._log = None

    def __enter__(self) -> "ServerProcess":
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ----------------------------------------------------------------------------- model config overrides


def deep_merge(base: dict, overrides: dict) -> dict:
    """base with overrides applied recursively (dicts merge, anything else replaces); inputs untouched."""
    merged = dict(base)
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def model_config_document(model_dir: Path, overrides: dict | None = None) -> dict:
    """A model folder's config.json (parsed, {} when absent) with `overrides` merged in."""
    config_file = Path(model_dir) / "config.json"
    document = json.loads(config_file.read_text()) if config_file.is_file() else {}
    return deep_merge(document, overrides or {})


def write_model_config(repository: Path, model_id: str, document: dict) -> None:
    """Replace the config.json of `model_id` in a repository made by single_model_repository (a copy,
    so the source model folder is never touched)."""
    (Path(repository) / model_id / "config.json").write_text(json.dumps(document, indent=2))


# ----------------------------------------------------------------------------- closed-loop load


async def closed_loop(concurrency: int, total: int, send) -> tuple[float, list[float]]:
    """`concurrency` clients share requests 0..total-1 round-robin (client c sends c, c+C, c+2C, ...),
    each awaiting `send(i)` back to back. Returns the wall time and the latency of every request
    (seconds, indexed by request)."""
    import asyncio

    latencies = [math.nan] * total

    async def client(c: int) -> None:
        for i in range(c, total, concurrency):
            start = time.perf_counter()
            await send(i)
            latencies[i] = time.perf_counter() - start

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(min(concurrency, total))))
    return time.perf_counter() - start, latencies


async def closed_loop_until(concurrency: int, deadline: float, send) -> tuple[float, int]:
    """closed_loop for a duration: `concurrency` clients each await `send(i)` back to back until
    time.perf_counter() reaches `deadline` (a request in flight then finishes; none starts after).
    Request numbers are dealt as in closed_loop: client c sends c, c+C, c+2C, ..., so i % C names the
    client and i // C counts its requests. Returns the wall time and how many requests were sent."""
    import asyncio

    sent = 0

    async def client(c: int) -> None:
        nonlocal sent
        i = c
        while time.perf_counter() < deadline:
            sent += 1
            await send(i)
            i += concurrency

    start = time.perf_counter()
    await asyncio.gather(*(client(c) for c in range(concurrency)))
    return time.perf_counter() - start, sent


class HTTPConnection:
    """A minimal keep-alive HTTP/1.1 client for load generation: one connection, one request at a time,
    Content-Length or chunked bodies. The load generator shares the 2 cores with the server it measures:
    httpx used 5-7 ms of CPU per small request there (0.75 cores at C=32) and about 0.3 ms per streamed
    chunk; this uses a small fraction of either."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self._reader = None
        self._writer = None

    async def post(self, path: str, body: bytes, content_type: str = "application/json",
                   headers: dict[str, str] | None = None) -> tuple[int, bytes]:
        """The status and the whole body."""
        status, chunks = await self._send(path, body, content_type, headers)
        return status, b"".join([piece async for piece in chunks])

    async def stream(self, path: str, body: bytes, content_type: str = "application/json",
                     headers: dict[str, str] | None = None):
        """The status and an async iterator over the body's pieces as they arrive (read it to the end
        before the next request on this connection)."""
        return await self._send(path, body, content_type, headers)

    async def _send(self, path: str, body: bytes, content_type: str, headers: dict[str, str] | None = None):
        import asyncio

        if self._writer is None:
            self._reader, self._writer = await asyncio.open_connection(self.host, self.port)
        extra = "".join(f"{name}: {value}\r\n" for name, value in (headers or {}).items())
        head = (f"POST {path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\nContent-Type: {content_type}\r\n"
                f"{extra}Content-Length: {len(body)}\r\n\r\n").encode()
        self._writer.write(head + body)
        status_line = await self._reader.readline()
        if not status_line:
            raise ConnectionError("the server closed the connection")
        status = int(status_line.split()[1])
        length, chunked, keep_alive = 0, False, True
        while (line := await self._reader.readline()) not in (b"\r\n", b"\n", b""):
            name, _, value = line.decode("latin-1").partition(":")
            name, value = name.strip().lower(), value.strip().lower()
            if name == "content-length":
                length = int(value)
            elif name == "transfer-encoding":
                chunked = value == "chunked"
            elif name == "connection" and value == "close":
                keep_alive = False
        return status, self._body(length, chunked, keep_alive)

    async def _body(self, length: int, chunked: bool, keep_alive: bool):
        reader = self._reader
        if chunked:
            while size := int((await reader.readline()).split(b";")[0], 16):
                yield (await reader.readexactly(size + 2))[:-2]  # the chunk, without its CRLF
            while await reader.readline() not in (b"\r\n", b"\n", b""):  # trailers
                pass
        elif length:
            yield await reader.readexactly(length)
        if not keep_alive:
            await self.close()

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = self._reader = None


class ConnectionPool:
    """`size` keep-alive HTTPConnections shared by concurrent clients (one request per connection at a time)."""

    def __init__(self, base_url: str, size: int) -> None:
        import asyncio
        from urllib.parse import urlsplit

        parts = urlsplit(base_url)
        self._idle: asyncio.Queue = asyncio.Queue()
        self._all = [HTTPConnection(parts.hostname, parts.port) for _ in range(size)]
        for connection in self._all:
            self._idle.put_nowait(connection)

    @contextlib.asynccontextmanager
    async def connection(self):
        """An idle connection, for one request (e.g. a stream read to its end)."""
        connection = await self._idle.get()
        try:
            yield connection
        finally:
            self._idle.put_nowait(connection)

    async def post_json(self, path: str, body: bytes) -> dict:
        """POST a JSON body; the parsed JSON response, or RuntimeError on a non-200 status."""
        async with self.connection() as connection:
            status, data = await connection.post(path, body)
        if status != 200:
            raise RuntimeError(f"HTTP {status} from {path}: {data[:500]!r}")
        return json.loads(data)

    async def close(self) -> None:
        for connection in self._all:
            await connection.close()


def new_event_loop_policy() -> str:
    """Use uvloop for a benchmark's HTTP clients when installed (less client CPU on a small machine);
    returns the loop's name for the report."""
    try:
        import uvloop
    except ImportError:
        return "asyncio"
    import asyncio

    asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    return "uvloop"


# ----------------------------------------------------------------------------- Prometheus histograms


@dataclass
class Histogram:
    """One Prometheus histogram summed over the series selected: cumulative bucket counts by upper bound."""

    count: float
    total: float
    buckets: dict[float, float]

    def __sub__(self, other: "Histogram") -> "Histogram":
        return Histogram(self.count - other.count, self.total - other.total,
                         {le: n - other.buckets.get(le, 0.0) for le, n in self.buckets.items()})

    @property
    def mean(self) -> float:
        return self.total / self.count if self.count else math.nan

    def describe(self) -> str:
        """'N observations, mean M; <=1: a, 2: b, 3-4: c, ...' (per-bucket counts, empty buckets left out)."""
        parts, previous, low = [], 0.0, None
        for le in sorted(self.buckets):
            n = self.buckets[le] - previous
            previous = self.buckets[le]
            label = ("+Inf" if math.isinf(le) else f"{le:g}") if low is None else \
                (f">{low:g}" if math.isinf(le) else (f"{le:g}" if low + 1 >= le else f"{low + 1:g}-{le:g}"))
            if n:
                parts.append(f"{label}: {n:g}")
            low = le
        return f"{self.count:g} batches, mean {fmt(self.mean, 1)} items; by size {', '.join(parts) or '-'}"


def read_histogram(base_url: str, name: str, label: str = "", prefix: str = "") -> Histogram:
    """GET /metrics and sum the histogram `name` over the series whose `label` starts with `prefix`
    (every series when label is empty)."""
    import re

    status, body = _http_get(base_url + "/metrics")
    if status != 200:
        raise RuntimeError(f"GET /metrics: HTTP {status}")
    pattern = re.compile(r'^(\w+)(?:\{(.*)\})?\s+(\S+)$')
    labels_pattern = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')
    count = total = 0.0
    buckets: dict[float, float] = {}
    for line in body.decode().splitlines():
        match = pattern.match(line)
        if not match or not match.group(1).startswith(name):
            continue
        metric, value = match.group(1), float(match.group(3))
        labels = dict(labels_pattern.findall(match.group(2) or ""))
        if label and not labels.get(label, "").startswith(prefix):
            continue
        if metric == name + "_count":
            count += value
        elif metric == name + "_sum":
            total += value
        elif metric == name + "_bucket":
            le = float(labels["le"])
            buckets[le] = buckets.get(le, 0.0) + value
    return Histogram(count, total, buckets)



def foreign_warning(foreign_s: float, wall: float, threshold: float = 0.15) -> str:
    """A warning for a report when other processes (ForeignCPU.seconds()) used more than `threshold`
    cores on average during a measurement of `wall` seconds, else ''."""
    cores = foreign_s / wall if wall > 0 else 0.0
    return f"WARNING: other processes used {cores:.2f} cores during this measurement" if cores >= threshold else ""


T = TypeVar("T")


def software() -> str:
    """The openvino-genai and Python versions and the CPU count, for a report's first line."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        genai = version("openvino-genai")
    except PackageNotFoundError:
        genai = "?"
    return f"openvino-genai {genai}, Python {sys.version.split()[0]}, {os.cpu_count()} CPU(s)"


def environment(args) -> str:
    """One line naming the model, openvino-genai and Python versions, and the CPU count."""
    return f"model {args.model_id} ({args.version_dir}), {software()}"


def run_on_server(repository: Path, workdir: Path, model_id: str | Sequence[str], keep_server_log: str | None,
                  body: Callable[[ServerProcess], Awaitable[T]]) -> T:
    """Start the server on `repository`, wait until `model_id` (or each of several ids) is AVAILABLE,
    run `body(server)` on a fresh event loop, always stop the server (printing its log tail on failure)
    and keep its log when asked."""
    import asyncio

    server = ServerProcess(repository, workdir / "server.log")
    try:
        t0 = time.perf_counter()
        server.start(model_ids=[model_id] if isinstance(model_id, str) else list(model_id))
        print(f"[server] ready in {time.perf_counter() - t0:.1f}s on port {server.port} "
              f"(RSS {server.rss_mb():.0f} MB)", file=sys.stderr)
        return asyncio.run(body(server))
    except BaseException:
        print(f"[server] log tail:\n{server.log_tail()}", file=sys.stderr)
        raise
    finally:
        server.stop()
        if keep_server_log:
            shutil.copy2(server.log_path, keep_server_log)
