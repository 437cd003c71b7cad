"""Soak test: mixed traffic from many clients against a real server for a set duration, with a version swap
and a config edit on the way; throughput, latency and errors per kind, and memory over time.

What it does, in order (one server process at a time: OpenVINO uses every core):

  baselines  a server on an empty repository (RSS right after ready); then a fresh server on the soak's
             repository: RSS right after ready (models loaded, no request yet), then every model unloaded
             through POST /v2/repository/models/{id}/unload, RSS once its versions are END and its
             generation workers are gone. That last figure is the reference for the unload goal: the same
             server on the same models, loaded and unloaded the same way, only without the soak.
  soak       a server on a copy of the repository; --clients closed-loop clients (each sends its next
             request as soon as the previous one is answered), dealt round-robin over four kinds:
               chat_stream  POST /v3/chat/completions, stream, include_usage, short max_tokens
               chat_unary   POST /v3/chat/completions, the same without stream
               embeddings   POST /v3/embeddings, 1 to 4 sentences (every embeddings model in turn)
               rerank       POST /v3/v2/rerank (Cohere v2), 1 query and 4 to 8 documents
             During the run: version N+1 of the embedding model is published the safe way (copied to a
             hidden name, renamed into place; its policy retires version N), later version N's folder is
             deleted (renamed to a hidden name, removed), and a pipeline setting of the chat model
             (text_generation.max_num_seqs) is edited in its config.json (written to a hidden file and
             renamed over it: the server reloads, load-then-swap). Every few seconds the RSS of the server
             and of its generation_worker children is read from /proc.
  unload     the clients stop; every model is unloaded as in the baseline, and the server's RSS is
             compared with the fresh server's after its unload (and, for information, the empty one's).

The report: requests/s (and tokens/s for chat) and p50/p95/p99 latency per kind, errors by HTTP status per
kind, which requests overlapped the swap, the deletion and the edit and how they ended, the lifecycle events
of the server log, RSS over time and its growth (last window vs first window after warm-up), the unload
comparison, how busy the machine was (load average, CPU used by other processes), and four goals with
MET / NOT met. The clients use the benchmarks' minimal keep-alive HTTP/1.1 client (common.HTTPConnection:
httpx used 5-7 ms of CPU per request on the 2 cores the server needs); every request carries an X-Request-ID,
so a failure can be found in the server log, which the tool keeps (its path is printed).

    .venv/bin/python tools/bench/soak.py --duration 60            # smoke run
    .venv/bin/python tools/bench/soak.py --json soak.json         # 600 s, 8 clients, the tiny test models
    .venv/bin/python tools/bench/soak.py --demo --clients 12      # model_repository/ (make demo-repository)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (  # noqa: E402
    REPO_ROOT, ConnectionPool, ServerProcess, bench_parser, closed_loop_until, descendants, fmt, machine_busy_seconds,
    ms, new_event_loop_policy, percentile, process_cpu_seconds, process_rss_mb, run_on_server, software,
    text_table, tree_cpu_seconds, wait_for_idle,
)

KINDS = ("chat_stream", "chat_unary", "embeddings", "rerank")
KIND_TASK = {"chat_stream": "text_generation", "chat_unary": "text_generation", "embeddings": "embeddings",
             "rerank": "rerank"}
TEST_MODELS = ("tiny-chat", "tiny-embed", "tiny-rerank", "minilm")
ACCEPTED_ERRORS = ("429", "503")  # overload and not-ready answers: allowed by the first goal
RSS_FLAT_PCT = 10.0  # goal: RSS growth over the soak
UNLOAD_PCT = 10.0  # goal: RSS after unloading vs the fresh server's after its unload
AROUND_BEFORE_S = 1.0  # a request is "around" an event when it overlaps [start - 1 s, done + 5 s]
AROUND_AFTER_S = 5.0
EVENT_TIMEOUT_S = 180.0  # a swap, deletion or edit not settled by then is reported as such
SETTLE_AFTER_UNLOAD_S = 3.0  # after END and no workers: let the release threads finish before reading RSS


# ----------------------------------------------------------------------------- records


@dataclass(slots=True)
class Record:
    """One request: `status` is "ok", an HTTP status ("503"), or what went wrong on a 200 or on the way:
    "stream-error" (an error event in the stream), "bad-response" (no [DONE], a malformed body), "conn"
    (connection failed or closed), "timeout" (no answer within --request-timeout)."""

    kind: str
    model: str
    start: float  # seconds since the soak started
    end: float
    status: str
    tokens: int = 0  # completion tokens (chat)
    ttft: float | None = None  # first content chunk (chat_stream), seconds
    request_id: str = ""
    detail: str = ""  # body or exception of a failure, shortened

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def latency(self) -> float:
        return self.end - self.start


@dataclass
class Event:
    """A change made to the repository during the soak: when it was made (the rename) and when the
    server had fully acted on it; times in seconds since the soak started."""

    name: str
    model: str
    start: float
    done: float | None = None
    description: str = ""
    marks: dict = field(default_factory=dict)  # intermediate times, e.g. new version AVAILABLE
    error: str = ""

    def window(self) -> tuple[float, float]:
        end = self.done if self.done is not None else self.start + EVENT_TIMEOUT_S
        return self.start - AROUND_BEFORE_S, end + AROUND_AFTER_S


@dataclass
class Sample:
    t: float  # seconds since the soak started
    server_mb: float
    workers: dict[int, float]  # generation worker pid -> RSS MB
    others_mb: float  # other descendants (multiprocessing helpers)
    load1: float

    @property
    def workers_mb(self) -> float:
        return sum(self.workers.values())

    @property
    def total_mb(self) -> float:
        return self.server_mb + self.workers_mb + self.others_mb


# ----------------------------------------------------------------------------- statistics (pure)


def kind_summary(records: Sequence[Record], wall: float, kinds: Sequence[str] = KINDS) -> dict[str, dict]:
    """Per kind: counts, rates over `wall` seconds, latency percentiles of the successful requests (ms),
    TTFT percentiles of streams, and failures by status."""
    out = {}
    for kind in kinds:
        mine = [r for r in records if r.kind == kind]
        good = [r for r in mine if r.ok]
        latencies = [r.latency for r in good]
        ttfts = [r.ttft for r in good if r.ttft is not None]
        tokens = sum(r.tokens for r in good)
        out[kind] = {
            "requests": len(mine), "ok": len(good), "failed": len(mine) - len(good),
            "requests_per_s": len(good) / wall if wall > 0 else math.nan,
            "tokens": tokens, "tokens_per_s": tokens / wall if wall > 0 else math.nan,
            "p50_ms": ms(percentile(latencies, 50)), "p95_ms": ms(percentile(latencies, 95)),
            "p99_ms": ms(percentile(latencies, 99)),
            "ttft_p50_ms": ms(percentile(ttfts, 50)), "ttft_p95_ms": ms(percentile(ttfts, 95)),
            "ttft_p99_ms": ms(percentile(ttfts, 99)),
            "errors": dict(sorted(Counter(r.status for r in mine if not r.ok).items())),
        }
    return out


def requests_around(records: Sequence[Record], events: Sequence[Event], kinds: Sequence[str] = KINDS) -> list[dict]:
    """Per event: the requests of each kind whose [start, end] overlaps the event's window, and how many
    of them failed (by status)."""
    out = []
    for event in events:
        low, high = event.window()
        near = [r for r in records if r.start <= high and r.end >= low]
        per_kind = {}
        for kind in kinds:
            mine = [r for r in near if r.kind == kind]
            per_kind[kind] = {"requests": len(mine), "failed": sum(not r.ok for r in mine),
                              "errors": dict(sorted(Counter(r.status for r in mine if not r.ok).items()))}
        out.append({"event": event.name, "model": event.model, "window": [low, high], "kinds": per_kind,
                    "failed": sum(k["failed"] for k in per_kind.values()),
                    "requests": sum(k["requests"] for k in per_kind.values())})
    return out


def window_mean(samples: Sequence[Sample], attribute: str, low: float, high: float) -> float:
    values = [getattr(s, attribute) for s in samples if low <= s.t < high]
    return statistics.fmean(values) if values else math.nan


def growth_windows(duration: float, warmup: float, window: float | None = None) -> tuple[tuple[float, float], tuple[float, float]]:
    """The first window after warm-up and the last window of the soak: each min(60 s, a quarter of the
    time after warm-up) long unless given."""
    if window is None:
        window = min(60.0, max(duration - warmup, 0.0) / 4)
    return (warmup, warmup + window), (duration - window, duration)


def rss_growth(samples: Sequence[Sample], first: tuple[float, float], last: tuple[float, float]) -> dict[str, dict]:
    """Mean RSS of the server, of the generation workers (summed) and of everything in the two windows,
    and the growth from the first to the last in %."""
    out = {}
    for name, attribute in (("server", "server_mb"), ("workers", "workers_mb"), ("total", "total_mb")):
        a, b = window_mean(samples, attribute, *first), window_mean(samples, attribute, *last)
        pct = (b - a) / a * 100 if a and not math.isnan(a) and not math.isnan(b) else math.nan
        out[name] = {"first_mb": a, "last_mb": b, "growth_pct": pct}
    return out


def worker_lifetimes(samples: Sequence[Sample]) -> list[dict]:
    """Each generation worker seen: first and last time sampled, RSS then and at most."""
    seen: dict[int, dict] = {}
    for sample in samples:
        for pid, mb in sample.workers.items():
            entry = seen.setdefault(pid, {"pid": pid, "first_t": sample.t, "first_mb": mb, "max_mb": mb})
            entry["last_t"], entry["last_mb"] = sample.t, mb
            entry["max_mb"] = max(entry["max_mb"], mb)
    return sorted(seen.values(), key=lambda e: e["first_t"])


def pct_change(value: float, reference: float) -> float:
    return (value - reference) / reference * 100 if reference and not math.isnan(reference) else math.nan


def evaluate_goals(kinds: dict[str, dict], around: Sequence[dict], growth: dict[str, dict],
                   unload: dict | None, events: Sequence[Event] = ()) -> list[dict]:
    """The four goals: each {"goal", "met", "detail"}."""
    goals = []
    other = {f"{kind} {status}": n for kind, summary in kinds.items() for status, n in summary["errors"].items()
             if status not in ACCEPTED_ERRORS}
    accepted = sum(n for summary in kinds.values() for status, n in summary["errors"].items() if status in ACCEPTED_ERRORS)
    goals.append({"goal": "no error other than 429/503", "met": not other,
                  "detail": (", ".join(f"{k}: {n}" for k, n in other.items()) if other else "none")
                  + f"; 429/503: {accepted}"})
    failed = {a["event"]: a["failed"] for a in around}
    unsettled = [e.name for e in events if e.done is None or e.error]
    detail = ", ".join(f"{name}: {n} failed of {a['requests']}" for (name, n), a in zip(failed.items(), around))
    if unsettled:
        detail += f"; not settled: {', '.join(unsettled)}"
    goals.append({"goal": "zero failed requests across the swap and the edit",
                  "met": bool(around) and not any(failed.values()) and not unsettled,
                  "detail": detail or "no event took place"})
    server, workers = growth["server"]["growth_pct"], growth["workers"]["growth_pct"]
    flat = [v for v in (server, workers) if not math.isnan(v)]
    goals.append({"goal": f"RSS flat within {RSS_FLAT_PCT:g} % over the soak",
                  "met": bool(flat) and not math.isnan(server) and all(v <= RSS_FLAT_PCT for v in flat),
                  "detail": f"server {fmt_pct(server)}, generation workers {fmt_pct(workers)}, "
                            f"total {fmt_pct(growth['total']['growth_pct'])} (last window vs first after warm-up)"})
    if unload is None:
        goals.append({"goal": f"RSS after unloading within {UNLOAD_PCT:g} % of a fresh server's", "met": False,
                      "detail": "not measured"})
    else:
        change = pct_change(unload["server_mb"], unload["fresh_server_mb"])
        goals.append({"goal": f"RSS after unloading within {UNLOAD_PCT:g} % of a fresh server's",
                      "met": not math.isnan(change) and change <= UNLOAD_PCT and unload["workers"] == 0,
                      "detail": f"{unload['server_mb']:.0f} MB vs {unload['fresh_server_mb']:.0f} MB "
                                f"({fmt_pct(change)}), generation workers left: {unload['workers']}"})
    return goals


def describe_breakdown(breakdown: dict) -> str:
    return (f"anon {breakdown.get('anon_mb', math.nan):.1f} MB, file {breakdown.get('file_mb', math.nan):.1f} MB, "
            f"shmem {breakdown.get('shmem_mb', math.nan):.1f} MB, {breakdown.get('threads', 0):.0f} threads")


def fmt_pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{value:+.1f} %"


def memory_rows(samples: Sequence[Sample], bucket: float, events: Sequence[Event]) -> list[list[str]]:
    """RSS over time in buckets of `bucket` seconds (means of the samples in each), events marked."""
    if not samples:
        return []
    rows = []
    end = max(s.t for s in samples)
    low = 0.0
    while low <= end:
        high = low + bucket
        inside = [s for s in samples if low <= s.t < high]
        if inside:
            marks = [e.name for e in events if low <= e.start < high]
            rows.append([f"{low:.0f}-{high:.0f}", fmt(statistics.fmean(s.server_mb for s in inside)),
                         fmt(statistics.fmean(s.workers_mb for s in inside)),
                         "/".join(str(n) for n in sorted({len(s.workers) for s in inside})),
                         fmt(statistics.fmean(s.others_mb for s in inside)),
                         fmt(statistics.fmean(s.total_mb for s in inside)),
                         f"{statistics.fmean(s.load1 for s in inside):.2f}", ", ".join(marks)])
        low = high
    return rows


def build_result(*, run: dict, baselines: dict, ready: Sample, wall: float, records: Sequence[Record],
                 events: Sequence[Event], samples: Sequence[Sample], unload: dict, usage: dict, log: dict,
                 failures: list[dict], warmup: float, sample_s: float) -> dict:
    """The result document (what --json writes and render() prints) from what a soak measured."""
    duration = run["duration_s"]
    kinds = kind_summary(records, wall)
    around = requests_around(records, events)
    first, last = growth_windows(duration, warmup)
    growth = rss_growth(samples, first, last)
    unload = dict(unload, fresh_server_mb=baselines.get("fresh_unloaded_server_mb", math.nan),
                  empty_server_mb=baselines.get("empty_server_mb"))
    loads = [s.load1 for s in samples] or [math.nan]
    bucket = max(sample_s, round(duration / 20 / sample_s) * sample_s)
    result = {
        "run": run,
        "baselines": dict(baselines),
        "soak": {"ready_server_mb": ready.server_mb, "ready_workers": len(ready.workers),
                 "ready_workers_mb": ready.workers_mb, "wall_s": wall, "requests": len(records)},
        "kinds": kinds,
        "events": [asdict(e) for e in events],
        "around": around,
        "log": log,
        "failures": failures,
        "memory": {"sample_s": sample_s, "bucket_s": bucket, "warmup_s": warmup,
                   "first_window": list(first), "last_window": list(last),
                   "samples": [asdict(s) for s in samples], "workers": worker_lifetimes(samples)},
        "growth": growth,
        "unload": unload,
        "disturbance": {"cpus": os.cpu_count(), **usage, "load1_min": min(loads), "load1_max": max(loads)},
    }
    result["goals"] = evaluate_goals(kinds, around, growth, unload if baselines else None, events)
    return result


# ----------------------------------------------------------------------------- report (pure)


def render(result: dict) -> str:
    """The printed report, from the result document (the one --json writes)."""
    lines: list[str] = []
    add = lines.append
    run = result["run"]
    add(f"Soak: {run['duration_s']:.0f} s, {run['clients']} clients ({run['split']}), {run['environment']}")
    add(f"repository: {run['repository']}")
    add(f"models: {run['models']}")
    add(f"clients: {run['client']}; request timeout {run['request_timeout_s']:g} s; chat max_tokens "
        f"{run['max_tokens']}")
    add(f"load average (1, 5, 15 min) at start: {run['load_start']}; at end: {run['load_end']} (runnable threads, the "
        f"soak's own server, workers and clients included; see Machine below for what other processes used)")

    base = result.get("baselines") or {}
    if base:
        add("\nBaselines (separate server processes, before the soak, one after the other):")
        if "empty_server_mb" in base:
            add(f"  empty repository, right after ready:                      server {base['empty_server_mb']:.0f} MB")
        if "fresh_loaded_server_mb" in base:
            add(f"  fresh server on the same repository, right after ready:   server "
                f"{base['fresh_loaded_server_mb']:.0f} MB + {base['fresh_loaded_workers']} generation worker(s) "
                f"{base['fresh_loaded_workers_mb']:.0f} MB (models loaded, no request yet)")
            add(f"  the same server after unloading every model:             server "
                f"{base['fresh_unloaded_server_mb']:.0f} MB, workers left {base['fresh_unloaded_workers']}")
        if "burst_unloaded_server_mb" in base:
            add(f"  another fresh server after {base['burst_s']:g} s of the same traffic ({base['burst_requests']} "
                f"requests, {base['burst_failed']} failed), then unloading: server {base['burst_unloaded_server_mb']:.0f} "
                f"MB, workers left {base['burst_unloaded_workers']}")
        add("  Fair comparison, used by the goal: the soak's server after its unload vs the fresh server after the "
            "same unload (both loaded the same models once and released them through the same API; the fresh one "
            "never served a request). The short-traffic server tells what serving at all leaves behind once "
            "(OpenVINO CPU plugin and oneDNN caches, modules imported on first use, malloc arenas) from what the "
            "soak accumulated. An empty-repository server never loaded the OpenVINO CPU plugin or the tokenizer "
            "extension, which stay mapped once a model was loaded: information only.")

    soak = result["soak"]
    add(f"\nSoak server ready with RSS {soak['ready_server_mb']:.0f} MB + {soak['ready_workers']} worker(s) "
        f"{soak['ready_workers_mb']:.0f} MB; wall {soak['wall_s']:.1f} s; {soak['requests']} requests")
    add(f"\nThroughput and latency per kind (successful requests; rates over the whole {soak['wall_s']:.0f} s):")
    headers = ("kind", "requests", "ok", "failed", "req/s", "tokens/s", "p50 ms", "p95 ms", "p99 ms",
               "TTFT p50/p95/p99 ms")
    rows = []
    for kind, s in result["kinds"].items():
        ttft = "-" if math.isnan(s["ttft_p50_ms"]) else \
            f"{s['ttft_p50_ms']:.1f}/{s['ttft_p95_ms']:.1f}/{s['ttft_p99_ms']:.1f}"
        rows.append([kind, str(s["requests"]), str(s["ok"]), str(s["failed"]), fmt(s["requests_per_s"]),
                     fmt(s["tokens_per_s"]) if KIND_TASK[kind] == "text_generation" else "-",
                     fmt(s["p50_ms"]), fmt(s["p95_ms"]), fmt(s["p99_ms"]), ttft])
    add(text_table(headers, rows))
    chat_tokens = sum(s["tokens"] for k, s in result["kinds"].items() if KIND_TASK[k] == "text_generation")
    add(f"chat completion tokens: {chat_tokens} ({chat_tokens / soak['wall_s']:.1f} tokens/s over both chat kinds)")

    add("\nErrors by status per kind:")
    error_rows = [[kind, status, str(n)] for kind, s in result["kinds"].items() for status, n in s["errors"].items()]
    add(text_table(("kind", "status", "count"), error_rows) if error_rows else "  none")

    add(f"\nRepository changes during the soak (a request is 'around' a change when it overlaps "
        f"[made - {AROUND_BEFORE_S:g} s, settled + {AROUND_AFTER_S:g} s]):")
    for event, around in zip(result["events"], result["around"]):
        done = f"settled at {event['done']:.1f} s" if event["done"] is not None else "NOT settled"
        marks = ", ".join(f"{k} {v:.1f} s" for k, v in event["marks"].items())
        add(f"  {event['start']:7.1f} s  {event['name']}: {event['description']}; {done}"
            + (f" ({marks})" if marks else "") + (f"; ERROR {event['error']}" if event["error"] else ""))
        per_kind = ", ".join(f"{k} {v['requests']}" + (f" ({v['failed']} failed: {v['errors']})" if v["failed"] else "")
                             for k, v in around["kinds"].items())
        add(f"            window {around['window'][0]:.1f}-{around['window'][1]:.1f} s: {around['requests']} requests, "
            f"{around['failed']} failed; {per_kind}")

    log = result.get("log") or {}
    if log.get("timeline"):
        add("\nLifecycle events in the server log (seconds since the soak started):")
        for entry in log["timeline"]:
            add(f"  {entry['t']:7.1f} s  {entry['text']}")
    if log:
        add(f"server log: {log['lines']} lines, {log['warnings']} warning(s), {log['errors']} error(s), "
            f"{log['tracebacks']} traceback line(s), {log['non_json']} non-JSON line(s); {log['path']}")
        for line in log.get("problems", [])[:10]:
            add(f"  {line}")

    failures = result.get("failures") or []
    if failures:
        add(f"\nFailed requests ({len(failures)} shown of {sum(s['failed'] for s in result['kinds'].values())}):")
        for f in failures[:20]:
            add(f"  {f['start']:7.1f}-{f['end']:.1f} s {f['kind']} {f['model']} -> {f['status']}: {f['detail'][:300]}"
                f" [X-Request-ID {f['request_id']}]")
            for line in f.get("log", [])[:3]:
                add(f"      log: {line[:400]}")

    add(f"\nMemory (VmRSS, MB; means over {result['memory']['bucket_s']:g} s of samples taken every "
        f"{result['memory']['sample_s']:g} s; workers = generation_worker processes, others = other children):")
    add(text_table(("t s", "server", "workers", "n", "others", "total", "load1", "events"),
                   memory_rows([Sample(**s) for s in result["memory"]["samples"]], result["memory"]["bucket_s"],
                               [Event(**e) for e in result["events"]])))
    g = result["growth"]
    first, last = result["memory"]["first_window"], result["memory"]["last_window"]
    add(f"RSS growth, mean of {last[0]:.0f}-{last[1]:.0f} s vs {first[0]:.0f}-{first[1]:.0f} s (warm-up "
        f"{result['memory']['warmup_s']:g} s): " + ", ".join(
            f"{name} {v['first_mb']:.1f} -> {v['last_mb']:.1f} MB ({fmt_pct(v['growth_pct'])})" for name, v in g.items()))
    for w in result["memory"]["workers"]:
        add(f"  generation worker {w['pid']}: sampled {w['first_t']:.0f}-{w['last_t']:.0f} s, RSS {w['first_mb']:.1f} -> "
            f"{w['last_mb']:.1f} MB (max {w['max_mb']:.1f})")

    unload = result.get("unload")
    if unload:
        add("\nUnload at the end (POST /v2/repository/models/{id}/unload for every model):")
        add(f"  answers: {unload['answers']}; all versions END after {fmt(unload['end_after_s'])} s, generation "
            f"workers gone after {fmt(unload['workers_gone_after_s'])} s; RSS read {SETTLE_AFTER_UNLOAD_S:g} s later "
            f"(median of 3)")
        add(f"  server RSS {unload['server_mb']:.1f} MB vs fresh server after unload {unload['fresh_server_mb']:.1f} MB "
            f"({fmt_pct(pct_change(unload['server_mb'], unload['fresh_server_mb']))})"
            + (f"; vs empty repository {unload['empty_server_mb']:.1f} MB "
               f"({fmt_pct(pct_change(unload['server_mb'], unload['empty_server_mb']))})"
               if unload.get("empty_server_mb") else "")
            + f"; other children {unload['others_mb']:.1f} MB")
        burst = (result.get("baselines") or {}).get("burst_unloaded_server_mb")
        if burst:
            add(f"  vs the fresh server that served {result['baselines']['burst_s']:g} s of traffic, after its unload: "
                f"{burst:.1f} MB ({fmt_pct(pct_change(unload['server_mb'], burst))})")
        fresh = (result.get("baselines") or {}).get("fresh_unloaded_breakdown")
        if unload.get("breakdown"):
            add(f"  where it is: soak server {describe_breakdown(unload['breakdown'])}"
                + (f"; fresh server {describe_breakdown(fresh)}" if fresh else ""))
            burst_breakdown = (result.get("baselines") or {}).get("burst_unloaded_breakdown")
            if burst_breakdown:
                add(f"  short-traffic server {describe_breakdown(burst_breakdown)}")

    d = result["disturbance"]
    add(f"\nMachine: {d['cpus']} CPUs; during the soak other processes used {d['foreign_cores']:.2f} cores on average, "
        f"the server and its workers {d['server_cores']:.2f}, this tool's clients {d['client_cores']:.2f}; "
        f"load1 over the soak {d['load1_min']:.2f}-{d['load1_max']:.2f}")

    add("\nGoals:")
    for goal in result["goals"]:
        add(f"  {'MET    ' if goal['met'] else 'NOT met'}  {goal['goal']}: {goal['detail']}")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- repository


def test_models_dir() -> Path:
    """The tiny test models (tools/make_test_models.py; built there if missing), as tests/e2e use them."""
    path = Path(os.environ.get("OVMS_TEST_MODELS", REPO_ROOT / ".cache" / "test-models"))
    if not all((path / name / "1").is_dir() for name in TEST_MODELS):
        subprocess.run([sys.executable, str(REPO_ROOT / "tools" / "make_test_models.py"), str(path)], check=True)
    return path


def _link_or_copy(source: str, target: str) -> str:
    """Large files (weights) are hard-linked when possible: the soak never writes to a file in place (it
    replaces config.json by a rename and deletes by unlinking), so the source cannot change."""
    if os.path.getsize(source) >= 1 << 20:
        try:
            os.link(source, target)
            return target
        except OSError:
            pass
    return shutil.copy2(source, target)


def copy_repository(source: Path, target: Path, only: Sequence[str] | None = None) -> None:
    """A working copy of a repository (hidden names left out), or of the model folders `only` names."""
    hidden = shutil.ignore_patterns(".*")
    if only is None:
        shutil.copytree(source, target, ignore=hidden, copy_function=_link_or_copy)
        return
    target.mkdir(parents=True)
    for name in only:
        shutil.copytree(source / name, target / name, ignore=hidden, copy_function=_link_or_copy)


def discover_models(root: Path) -> dict[str, str]:
    """model id -> task, for every model folder with a config.json (a config.json inside a version folder is
    the Hugging Face one and is not a model)."""
    models = {}
    for config in sorted(root.rglob("config.json")):
        relative = config.parent.relative_to(root)
        if any(part.startswith(".") for part in relative.parts) or config.parent.name.isdigit():
            continue
        if any(parent.name.isdigit() for parent in config.parents if root in parent.parents):
            continue
        try:
            task = json.loads(config.read_text()).get("task")
        except (OSError, json.JSONDecodeError):
            continue
        if task:
            models[relative.as_posix()] = task
    return models


def version_numbers(model_dir: Path) -> list[int]:
    return sorted(int(p.name) for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit() and p.name[0] != "0")


# ----------------------------------------------------------------------------- server probes


def _request(method: str, url: str, body: dict | None = None, timeout: float = 30.0) -> tuple[int, bytes]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def http(method: str, url: str, body: dict | None = None) -> tuple[int, bytes]:
    """A status or control call, off the event loop (urllib in a thread)."""
    return await asyncio.to_thread(_request, method, url, body)


async def version_states(base_url: str, model_id: str) -> dict[str, str]:
    status, body = await http("GET", f"{base_url}/v1/models/{model_id}")
    if status != 200:
        return {}
    return {s["version"]: s["state"] for s in json.loads(body).get("model_version_status", [])}


def _is_worker(pid: int, server_pid: int) -> bool:
    """A generation worker: a child of the server running python -m server.pipelines.generation_worker (as
    tests/e2e/harness.py counts them; a process a worker forks has the same command line until it execs)."""
    ppid = int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    return ppid == server_pid and b"generation_worker" in Path(f"/proc/{pid}/cmdline").read_bytes()


def worker_pids(server_pid: int) -> list[int]:
    """Live generation worker processes of the server."""
    pids = []
    for pid in descendants(server_pid):
        try:
            if _is_worker(pid, server_pid):
                pids.append(pid)
        except (OSError, ValueError, IndexError):
            pass
    return sorted(pids)


def memory_breakdown(pid: int) -> dict[str, float]:
    """RssAnon (heap, mostly), RssFile (mapped libraries and files) in MB and the thread count, from
    /proc/PID/status: where resident memory is, when two servers differ."""
    wanted = {"RssAnon": "anon_mb", "RssFile": "file_mb", "RssShmem": "shmem_mb", "Threads": "threads"}
    out: dict[str, float] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        if name in wanted:
            number = int(value.split()[0])
            out[wanted[name]] = number if name == "Threads" else number / 1024
    return out


def sample_memory(server_pid: int, t: float) -> Sample:
    workers: dict[int, float] = {}
    others = 0.0
    for pid in descendants(server_pid):
        try:
            mb = process_rss_mb(pid)
            is_worker = _is_worker(pid, server_pid)
        except (OSError, ValueError, IndexError):  # exited meanwhile
            continue
        if math.isnan(mb):
            continue
        if is_worker:
            workers[pid] = mb
        else:
            others += mb
    return Sample(t, process_rss_mb(server_pid), workers, others, os.getloadavg()[0])


def server_cpu_seconds(pid: int) -> float:
    """CPU time of the server, its live descendants and its children that exited and were waited for
    (cutime + cstime: the generation worker replaced by a reload keeps counting after it is gone)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    reaped = (int(fields[13]) + int(fields[14])) / os.sysconf("SC_CLK_TCK")
    return tree_cpu_seconds(pid) + reaped


class CPUUsage:
    """Cores used on average since creation by the server (with its workers), by this process (the clients),
    and by every other process of the machine."""

    def __init__(self, server_pid: int) -> None:
        self.pid = server_pid
        self.start = self._sample()

    def _sample(self) -> tuple[float, float, float, float]:
        return time.perf_counter(), machine_busy_seconds(), server_cpu_seconds(self.pid), process_cpu_seconds()

    def cores(self) -> dict[str, float]:
        end = self._sample()
        wall, busy, server, client = (b - a for a, b in zip(self.start, end))
        return {"server_cores": server / wall, "client_cores": client / wall,
                "foreign_cores": max(0.0, busy - server - client) / wall}


async def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    """Await `predicate()` (a coroutine function) until it is true or `timeout` seconds passed."""
    deadline = time.monotonic() + timeout
    while True:
        if await predicate():
            return True
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(interval)


async def unload_everything(server: ServerProcess, model_ids: Sequence[str]) -> dict:
    """POST unload for every model, wait until every version is END and no generation worker is left,
    give the release threads SETTLE_AFTER_UNLOAD_S, then read RSS (median of 3 readings a second apart)."""
    began = time.monotonic()
    answers = Counter()
    for model_id in model_ids:
        status, _ = await http("POST", f"{server.base_url}/v2/repository/models/{model_id}/unload")
        answers[status] += 1

    async def all_end() -> bool:
        for model_id in model_ids:
            states = await version_states(server.base_url, model_id)
            if any(state != "END" for state in states.values()):
                return False
        return True

    ended = await wait_until(all_end, 120.0)
    end_after = time.monotonic() - began if ended else math.nan

    async def no_workers() -> bool:
        return not await asyncio.to_thread(worker_pids, server.process.pid)

    gone = await wait_until(no_workers, 60.0)
    gone_after = time.monotonic() - began if gone else math.nan
    await asyncio.sleep(SETTLE_AFTER_UNLOAD_S)
    readings = []
    for i in range(3):
        if i:
            await asyncio.sleep(1.0)
        readings.append(await asyncio.to_thread(sample_memory, server.process.pid, 0.0))
    return {"answers": {str(k): v for k, v in answers.items()}, "end_after_s": end_after,
            "workers_gone_after_s": gone_after, "breakdown": memory_breakdown(server.process.pid),
            "server_mb": statistics.median(r.server_mb for r in readings),
            "others_mb": statistics.median(r.others_mb for r in readings),
            "workers": max(len(r.workers) for r in readings)}


# ----------------------------------------------------------------------------- baselines


def measure_empty(workdir: Path) -> float:
    """RSS of a server on an empty repository, right after ready."""
    repository = workdir / "repository"
    repository.mkdir(parents=True)

    async def body(server: ServerProcess) -> float:
        return server.rss_mb()

    return run_on_server(repository, workdir, [], None, body)


def measure_fresh(repository: Path, workdir: Path, model_ids: Sequence[str]) -> dict:
    """A fresh server on the repository: RSS right after ready (models loaded, no request), then after
    unloading every model exactly as the soak does at its end."""
    workdir.mkdir(parents=True)

    async def body(server: ServerProcess) -> dict:
        loaded = await asyncio.to_thread(sample_memory, server.process.pid, 0.0)
        unloaded = await unload_everything(server, model_ids)
        return {"fresh_loaded_server_mb": loaded.server_mb, "fresh_loaded_workers": len(loaded.workers),
                "fresh_loaded_workers_mb": loaded.workers_mb, "fresh_unloaded_server_mb": unloaded["server_mb"],
                "fresh_unloaded_workers": unloaded["workers"], "fresh_unload": unloaded,
                "fresh_unloaded_breakdown": unloaded["breakdown"]}

    return run_on_server(repository, workdir, model_ids, None, body)


def measure_burst(repository: Path, workdir: Path, args: argparse.Namespace, models: dict[str, str]) -> dict:
    """A fresh server on the repository that serves --burst-seconds of the soak's traffic (no repository
    change), then unloads every model as the soak does: what a server that has run inference once keeps
    after unloading (caches of the OpenVINO CPU plugin and oneDNN, lazily imported modules, malloc arenas),
    as opposed to what a long soak leaves behind."""
    workdir.mkdir(parents=True)

    async def body(server: ServerProcess) -> dict:
        soak = Soak(args, models)
        soak.pool = ConnectionPool(server.base_url, args.clients)
        soak.t0 = time.perf_counter()
        try:
            await closed_loop_until(args.clients, soak.t0 + args.burst_seconds, soak.send)
        finally:
            await soak.pool.close()
        unloaded = await unload_everything(server, sorted(models))
        return {"burst_s": args.burst_seconds, "burst_requests": len(soak.records),
                "burst_failed": sum(not r.ok for r in soak.records), "burst_unloaded_server_mb": unloaded["server_mb"],
                "burst_unloaded_workers": unloaded["workers"], "burst_unloaded_breakdown": unloaded["breakdown"]}

    return run_on_server(repository, workdir, sorted(models), None, body)


# ----------------------------------------------------------------------------- traffic


def corpora() -> dict:
    """Prompts, sentences and rerank texts of the other benchmarks (imported here, not at import time)."""
    from embeddings import SENTENCES
    from generation import PROMPTS
    from rerank import request_texts

    return {"prompts": PROMPTS, "sentences": SENTENCES, "rerank": request_texts}


class Soak:
    def __init__(self, args: argparse.Namespace, models: dict[str, str]) -> None:
        self.args = args
        self.models = models
        self.targets = {kind: sorted(m for m, task in models.items() if task == KIND_TASK[kind]) for kind in KINDS}
        self.client_kinds = [KINDS[c % len(KINDS)] for c in range(args.clients)]
        self.records: list[Record] = []
        self.events: list[Event] = []
        self.samples: list[Sample] = []
        self.corpora = corpora()
        self.t0 = 0.0
        self.t0_wall = 0.0
        self._payloads: dict[tuple[str, int], tuple[str, str, bytes]] = {}

    def now(self) -> float:
        return time.perf_counter() - self.t0

    # ------------------------------------------------------------- requests

    def payload(self, kind: str, seq: int) -> tuple[str, str, bytes]:
        """(model, path, JSON body) of a kind's seq-th request; bodies repeat with a short period."""
        key = (kind, seq % 240)
        if key not in self._payloads:
            self._payloads[key] = self._build(kind, key[1])
        return self._payloads[key]

    def _build(self, kind: str, seq: int) -> tuple[str, str, bytes]:
        targets = self.targets[kind]
        model = targets[seq % len(targets)]
        c = self.corpora
        if kind in ("chat_stream", "chat_unary"):
            body = {"model": model, "max_tokens": self.args.max_tokens,
                    "messages": [{"role": "user", "content": c["prompts"][seq % len(c["prompts"])]}]}
            if kind == "chat_stream":
                body.update(stream=True, stream_options={"include_usage": True})
            path = "/v3/chat/completions"
        elif kind == "embeddings":
            n = 1 + seq % 4
            sentences = c["sentences"]
            body = {"model": model, "input": [sentences[(seq * 7 + j) % len(sentences)] for j in range(n)]}
            path = "/v3/embeddings"
        else:
            query, documents = c["rerank"](seq, 4 + seq % 5)
            body = {"model": model, "query": query, "documents": documents}
            if seq % 2:
                body["top_n"] = 3
            path = "/v3/v2/rerank"
        return model, path, json.dumps(body).encode()

    async def send(self, i: int) -> None:
        client = i % self.args.clients
        seq = i // self.args.clients
        kind = self.client_kinds[client]
        model, path, payload = self.payload(kind, seq)
        request_id = f"soak-{client}-{seq}"
        headers = {"X-Request-ID": request_id}
        start = self.now()
        tokens, ttft, detail = 0, None, ""
        async with self.pool.connection() as connection:
            try:
                if kind == "chat_stream":
                    status, tokens, ttft, detail = await asyncio.wait_for(
                        self._stream(connection, path, payload, headers), self.args.request_timeout)
                else:
                    status, tokens, detail = await asyncio.wait_for(
                        self._unary(connection, kind, path, payload, headers), self.args.request_timeout)
            except asyncio.TimeoutError:
                status, detail = "timeout", f"no complete answer within {self.args.request_timeout:g} s"
            except (OSError, ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
                status, detail = "conn", f"{type(exc).__name__}: {exc}"
            if status != "ok":
                await connection.close()  # whatever is left on it is unread: the next request reconnects
        self.records.append(Record(kind, model, start, self.now(), status, tokens, ttft, request_id, detail[:500]))

    async def _unary(self, connection, kind: str, path: str, payload: bytes, headers: dict) -> tuple[str, int, str]:
        status, data = await connection.post(path, payload, headers=headers)
        if status != 200:
            return str(status), 0, data[:500].decode(errors="replace")
        try:
            answer = json.loads(data)
            if kind == "chat_unary":
                if not isinstance(answer["choices"][0]["message"]["content"], str):
                    raise ValueError("no message content")
                return "ok", int(answer["usage"]["completion_tokens"]), ""
            if kind == "embeddings":
                request = json.loads(payload)
                if len(answer["data"]) != len(request["input"]) or not answer["data"][0]["embedding"]:
                    raise ValueError(f"{len(answer['data'])} embeddings for {len(request['input'])} inputs")
                return "ok", 0, ""
            request = json.loads(payload)
            expected = min(request.get("top_n") or len(request["documents"]), len(request["documents"]))
            if len(answer["results"]) != expected:
                raise ValueError(f"{len(answer['results'])} results, expected {expected}")
            return "ok", 0, ""
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            return "bad-response", 0, f"{type(exc).__name__}: {exc}; body {data[:300]!r}"

    async def _stream(self, connection, path: str, payload: bytes, headers: dict):
        """Read the whole stream (so the connection can be reused); ("ok" | status, tokens, ttft, detail)."""
        from generation import RequestStats, ServerMode

        started = time.perf_counter()
        stats = RequestStats(0, 0, started)
        status, pieces = await connection.stream(path, payload, headers=headers)
        if status != 200:
            body = b"".join([piece async for piece in pieces])
            return str(status), 0, None, body[:500].decode(errors="replace")
        buffer, done, error = b"", False, ""
        async for data in pieces:
            now = time.perf_counter()
            buffer += data
            while True:
                end = buffer.find(b"\n\n")
                if end < 0:
                    break
                frame, buffer = buffer[:end], buffer[end + 2:]
                if done:
                    continue
                try:
                    done = ServerMode._frame(frame, now, stats)  # noqa: SLF001 - the benchmarks' SSE parser
                except RuntimeError as exc:  # an error event: the stream goes on to [DONE]
                    error = error or str(exc)
                except (ValueError, KeyError, TypeError) as exc:
                    error = error or f"malformed event {frame[:200]!r}: {exc}"
        ttft = stats.ttft if stats.first is not None else None
        if error:
            return "stream-error", stats.completion_tokens, ttft, error
        if not done:
            return "bad-response", stats.completion_tokens, ttft, f"stream ended without [DONE]; tail {buffer[-200:]!r}"
        return "ok", stats.completion_tokens, ttft, ""

    # ------------------------------------------------------------- background tasks

    async def sampler(self, server: ServerProcess, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.samples.append(await asyncio.to_thread(sample_memory, server.process.pid, self.now()))
            try:
                await asyncio.wait_for(stop.wait(), self.args.sample_seconds)
            except asyncio.TimeoutError:
                pass

    async def progress(self, stop: asyncio.Event) -> None:
        try:
            from tqdm import tqdm
        except ImportError:
            tqdm = None
        bar = tqdm(total=int(self.args.duration), unit="s", desc="soak", file=sys.stderr, leave=False) \
            if tqdm and sys.stderr.isatty() else None
        every = max(10.0, self.args.duration / 10)
        last_print = 0.0
        while not stop.is_set():
            try:
                await asyncio.wait_for(stop.wait(), 1.0)
            except asyncio.TimeoutError:
                pass
            t = min(self.now(), self.args.duration)
            failed = sum(not r.ok for r in self.records)
            rss = self.samples[-1] if self.samples else None
            memory = f"server {rss.server_mb:.0f} MB, workers {rss.workers_mb:.0f} MB" if rss else ""
            if bar is not None:
                bar.n = int(t)
                bar.set_postfix_str(f"{len(self.records)} requests, {failed} failed, {memory}", refresh=True)
            elif t - last_print >= every and not stop.is_set():
                last_print = t
                print(f"[soak] {t:5.0f} s: {len(self.records)} requests, {failed} failed; {memory}; "
                      f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
        if bar is not None:
            bar.close()

    async def scenario(self, server: ServerProcess) -> None:
        args = self.args
        steps = [(args.swap_at, self.swap), (args.delete_at, self.delete_old), (args.edit_at, self.edit)]
        for at, step in sorted(steps, key=lambda s: s[0]):
            if at >= args.duration:
                continue
            await asyncio.sleep(max(0.0, at - self.now()))
            await step(server)

    async def swap(self, server: ServerProcess) -> None:
        """Publish version N+1 of the swap model: copy version N to a hidden name, rename into place."""
        model = self.args.swap_model
        model_dir = self.args.repository_copy / model
        old = max(version_numbers(model_dir))
        new = old + 1
        staging = model_dir / f".{new}.incoming"
        copy_began = time.perf_counter()
        await asyncio.to_thread(shutil.copytree, model_dir / str(old), staging)
        copy_s = time.perf_counter() - copy_began
        staging.rename(model_dir / str(new))
        event = Event("swap", model, self.now(), description=f"{model} version {new} published (copy of {old} "
                      f"to {staging.name} in {copy_s:.1f} s, renamed to {new})")
        self.events.append(event)
        self.swap_versions = (old, new)
        try:
            async def available() -> bool:
                return (await version_states(server.base_url, model)).get(str(new)) == "AVAILABLE"

            if not await wait_until(available, EVENT_TIMEOUT_S):
                event.error = f"version {new} not AVAILABLE after {EVENT_TIMEOUT_S:g} s: " \
                              f"{await version_states(server.base_url, model)}"
                return
            event.marks[f"v{new} AVAILABLE"] = self.now()

            async def settled() -> bool:
                states = await version_states(server.base_url, model)
                return not any(s in ("LOADING", "UNLOADING", "START") for s in states.values())

            if not await wait_until(settled, EVENT_TIMEOUT_S):
                event.error = f"versions still changing after {EVENT_TIMEOUT_S:g} s"
                return
            states = await version_states(server.base_url, model)
            if states.get(str(old)) == "END":
                event.marks[f"v{old} END"] = self.now()
            event.description += f"; states then {states}"
            event.done = self.now()
        except Exception as exc:  # noqa: BLE001 - reported, the soak goes on
            event.error = f"{type(exc).__name__}: {exc}"

    async def delete_old(self, server: ServerProcess) -> None:
        """Delete the swapped-out version's folder: rename it to a hidden name, then remove it."""
        if not hasattr(self, "swap_versions"):
            return
        model = self.args.swap_model
        old, new = self.swap_versions
        model_dir = self.args.repository_copy / model
        hidden = model_dir / f".{old}.deleted"
        (model_dir / str(old)).rename(hidden)
        event = Event("delete", model, self.now(), description=f"{model} version {old} folder renamed to "
                      f"{hidden.name} and removed")
        self.events.append(event)
        try:
            await asyncio.to_thread(shutil.rmtree, hidden)

            async def settled() -> bool:
                states = await version_states(server.base_url, model)
                return states.get(str(old), "END") == "END" and states.get(str(new)) == "AVAILABLE"

            await asyncio.sleep(2.0)  # one settle period at least, so the server has seen the deletion
            if not await wait_until(settled, EVENT_TIMEOUT_S):
                event.error = f"not settled: {await version_states(server.base_url, model)}"
                return
            event.description += f"; states then {await version_states(server.base_url, model)}"
            event.done = self.now()
        except Exception as exc:  # noqa: BLE001
            event.error = f"{type(exc).__name__}: {exc}"

    async def edit(self, server: ServerProcess) -> None:
        """Change text_generation.max_num_seqs of the chat model in its config.json (a hidden file renamed
        over it); settled when the new value serves and the old generation worker has exited."""
        model = self.args.edit_model
        config_path = self.args.repository_copy / model / "config.json"
        status, body = await http("GET", f"{server.base_url}/v2/models/{model}/config")
        current = json.loads(body)["text_generation"]["max_num_seqs"] if status == 200 else 16
        value = 12 if current != 12 else 16
        document = json.loads(config_path.read_text())
        document.setdefault("text_generation", {})["max_num_seqs"] = value
        staging = config_path.parent / ".config.json.incoming"
        staging.write_text(json.dumps(document, indent=2))
        old_workers = set(await asyncio.to_thread(worker_pids, server.process.pid))
        os.replace(staging, config_path)
        event = Event("edit", model, self.now(), description=f"{model} text_generation.max_num_seqs {current} -> "
                      f"{value} (config.json replaced by a rename)")
        self.events.append(event)
        try:
            async def serving() -> bool:
                status, body = await http("GET", f"{server.base_url}/v2/models/{model}/config")
                return status == 200 and json.loads(body)["text_generation"]["max_num_seqs"] == value

            if not await wait_until(serving, EVENT_TIMEOUT_S):
                event.error = f"the new setting does not serve after {EVENT_TIMEOUT_S:g} s"
                return
            event.marks["new config serving"] = self.now()

            async def old_worker_gone() -> bool:
                now = set(await asyncio.to_thread(worker_pids, server.process.pid))
                return bool(now - old_workers) and len(now) <= len(old_workers)

            if not await wait_until(old_worker_gone, EVENT_TIMEOUT_S):
                event.error = f"the old generation worker is still there after {EVENT_TIMEOUT_S:g} s"
                return
            event.marks["old worker gone"] = self.now()
            status, body = await http("POST", f"{server.base_url}/v2/repository/index")
            pending = [e for e in json.loads(body) if e["name"] == model and "reloading" in e.get("reason", "")]
            if pending:
                event.error = f"still reloading: {pending}"
                return
            event.done = self.now()
        except Exception as exc:  # noqa: BLE001
            event.error = f"{type(exc).__name__}: {exc}"

    # ------------------------------------------------------------- the run

    async def run(self, server: ServerProcess) -> dict:
        args = self.args
        ready = await asyncio.to_thread(sample_memory, server.process.pid, 0.0)
        self.pool = ConnectionPool(server.base_url, args.clients)
        stop = asyncio.Event()
        usage = CPUUsage(server.process.pid)
        self.t0 = time.perf_counter()
        self.t0_wall = time.time()
        background = [asyncio.ensure_future(self.sampler(server, stop)), asyncio.ensure_future(self.progress(stop))]
        scenario = asyncio.ensure_future(self.scenario(server))
        try:
            wall, _ = await closed_loop_until(args.clients, self.t0 + args.duration, self.send)
        finally:
            if not scenario.done():
                print("[soak] the clients stopped before the repository changes settled; waiting for them",
                      file=sys.stderr)
            try:
                await asyncio.wait_for(asyncio.shield(scenario), EVENT_TIMEOUT_S)
            except asyncio.TimeoutError:
                scenario.cancel()
            stop.set()
            await asyncio.gather(*background, return_exceptions=True)
            await self.pool.close()
        cores = usage.cores()
        load_end = os.getloadavg()
        print(f"[soak] clients done after {wall:.1f} s: {len(self.records)} requests; unloading every model",
              file=sys.stderr, flush=True)
        unload = await unload_everything(server, sorted(self.models))
        return {"ready": ready, "wall": wall, "usage": cores, "load_end": load_end, "unload": unload}


# ----------------------------------------------------------------------------- server log


def _epoch(timestamp: str) -> float:
    return datetime.fromisoformat(timestamp.replace("Z", "+00:00")).timestamp()


def read_server_log(path: Path, t0_wall: float, failures: list[dict]) -> dict:
    """Lifecycle timeline, warnings and errors, and for each failed request its log lines (by request id)."""
    wanted = {f["request_id"]: f for f in failures}
    timeline, problems = [], []
    counts = Counter()
    lines = path.read_text(errors="replace").splitlines() if path.is_file() else []
    for line in lines:
        if "Traceback" in line:
            counts["tracebacks"] += 1
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError
        except ValueError:
            counts["non_json"] += 1
            problems.append(f"(not JSON) {line[:300]}")
            continue
        t = _epoch(record["timestamp"]) - t0_wall if "timestamp" in record else math.nan
        event = record.get("event", "")
        level = record.get("level", "")
        if level in ("warning", "error", "critical"):
            counts["warnings" if level == "warning" else "errors"] += 1
            problems.append(f"{t:7.1f} s {level}: {json.dumps(record)[:300]}")
        if record.get("request_id") in wanted:
            wanted[record["request_id"]].setdefault("log", []).append(line)
        if t < -1.0:  # start-up loads
            continue
        if event == "model_version_transition":
            timeline.append({"t": t, "text": f"{record['model']} v{record['version']} {record['from']} -> "
                                             f"{record['to']} ({record.get('reason', '')})"})
        elif event in ("model_version_reloading", "model_version_released", "load_discarded", "model_removed",
                       "model_version_broken", "generation_worker_gone", "model_config_rejected", "model_load_failed"):
            detail = {k: v for k, v in record.items() if k not in ("event", "level", "timestamp")}
            timeline.append({"t": t, "text": f"{event} {json.dumps(detail)[:200]}"})
    return {"path": str(path), "lines": len(lines), "warnings": counts["warnings"], "errors": counts["errors"],
            "tracebacks": counts["tracebacks"], "non_json": counts["non_json"], "timeline": timeline,
            "problems": problems}


# ----------------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = bench_parser(__doc__)
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of traffic (600)")
    parser.add_argument("--clients", type=int, default=8,
                        help=f"closed-loop clients, dealt round-robin over {', '.join(KINDS)} (8: 2 of each)")
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--repository", type=Path,
                        help="repository to soak (a working copy is used; default: the tiny test models)")
    source.add_argument("--demo", action="store_true",
                        help="soak model_repository/ as `make demo-repository` builds it (a working copy)")
    parser.add_argument("--swap-model", help="embeddings model whose next version is published during the run "
                                             "(default: the first embeddings model by id)")
    parser.add_argument("--edit-model", help="text_generation model whose config.json is edited during the run "
                                             "(default: the first one by id)")
    parser.add_argument("--swap-at", type=float, help="seconds into the soak to publish the new version (25 %%)")
    parser.add_argument("--delete-at", type=float, help="seconds into the soak to delete the old version (40 %%)")
    parser.add_argument("--edit-at", type=float, help="seconds into the soak to edit the chat config (55 %%)")
    parser.add_argument("--warmup", type=float, help="seconds not counted in the RSS growth (10 %%, at most 30)")
    parser.add_argument("--sample-seconds", type=float, default=5.0, help="RSS sampling interval (5)")
    parser.add_argument("--max-tokens", type=int, default=16, help="max_tokens of chat requests (16)")
    parser.add_argument("--request-timeout", type=float, default=120.0, help="client-side timeout per request (120)")
    parser.add_argument("--burst-seconds", type=float, default=10.0,
                        help="a third baseline server serves this many seconds of the traffic before its unload, "
                             "to tell one-time state from what the soak accumulates (10; 0: skip)")
    parser.add_argument("--no-baselines", action="store_true",
                        help="skip the empty and fresh servers (the unload goal is then not measured)")
    parser.add_argument("--idle-wait", type=float, default=60.0,
                        help="first wait up to this many seconds for other processes to leave the CPU (60; 0: no)")
    parser.add_argument("--json", type=Path, help="write the results to this JSON file")
    parser.add_argument("--keep-server-log", type=Path, help="also copy the soak server's log here")
    parser.add_argument("--workdir", type=Path, help="where to keep the logs (default: a new /tmp/soak-* folder)")
    args = parser.parse_args(argv)
    if args.duration <= 0 or args.clients < 1 or args.sample_seconds <= 0 or args.max_tokens < 1:
        parser.error("--duration, --clients, --sample-seconds and --max-tokens must be positive")
    if args.demo:
        args.source = REPO_ROOT / "model_repository"
        args.only = None
    elif args.repository:
        args.source = args.repository.resolve()
        args.only = None
    else:
        args.source = test_models_dir()
        args.only = TEST_MODELS
    if not args.source.is_dir():
        parser.error(f"{args.source} is not a folder")
    models = {m: t for m, t in discover_models(args.source).items()
              if args.only is None or m in args.only}
    missing = [m for m, _ in models.items() if not version_numbers(args.source / m)]
    if missing:
        hint = " (run `make demo-repository` first)" if args.demo else ""
        parser.error(f"model(s) without a version folder in {args.source}: {', '.join(missing)}{hint}")
    for task in ("text_generation", "embeddings", "rerank"):
        if task not in models.values():
            parser.error(f"{args.source} has no {task} model with a config.json")
    args.models = models
    args.swap_model = args.swap_model or min(m for m, t in models.items() if t == "embeddings")
    args.edit_model = args.edit_model or min(m for m, t in models.items() if t == "text_generation")
    if models.get(args.swap_model) != "embeddings" or models.get(args.edit_model) != "text_generation":
        parser.error("--swap-model must name an embeddings model and --edit-model a text_generation model")
    d = args.duration
    args.swap_at = 0.25 * d if args.swap_at is None else args.swap_at
    args.delete_at = 0.40 * d if args.delete_at is None else args.delete_at
    args.edit_at = 0.55 * d if args.edit_at is None else args.edit_at
    args.warmup = min(30.0, 0.1 * d) if args.warmup is None else args.warmup
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    began = time.perf_counter()
    loop = new_event_loop_policy()
    if args.idle_wait > 0 and not wait_for_idle(args.idle_wait, say=lambda text: print(f"[soak] {text}", file=sys.stderr)):
        print(f"[soak] the machine is still busy after {args.idle_wait:.0f} s; starting anyway", file=sys.stderr)
    load_start = os.getloadavg()
    workdir = (args.workdir or Path(tempfile.mkdtemp(prefix="soak-"))).resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    args.repository_copy = workdir / "repository"
    if args.repository_copy.exists():
        shutil.rmtree(args.repository_copy)
    copy_repository(args.source, args.repository_copy, args.only)
    models = args.models
    split = ", ".join(f"{kind} {sum(1 for c in range(args.clients) if KINDS[c % len(KINDS)] == kind)}" for kind in KINDS)
    print(f"[soak] {args.duration:.0f} s, {args.clients} clients ({split}); load average "
          f"{' '.join(f'{v:.2f}' for v in load_start)}; logs in {workdir}", file=sys.stderr, flush=True)

    baselines: dict = {}
    if not args.no_baselines:
        print("[baseline] empty repository ...", file=sys.stderr, flush=True)
        baselines["empty_server_mb"] = measure_empty(workdir / "empty")
        print("[baseline] fresh server on the same repository: ready, then unload ...", file=sys.stderr, flush=True)
        baselines.update(measure_fresh(args.repository_copy, workdir / "fresh", sorted(models)))
        if args.burst_seconds > 0:
            print(f"[baseline] fresh server, {args.burst_seconds:g} s of the same traffic, then unload ...",
                  file=sys.stderr, flush=True)
            baselines.update(measure_burst(args.repository_copy, workdir / "burst", args, models))

    soak = Soak(args, models)
    (workdir / "soak").mkdir(exist_ok=True)
    print(f"[soak] {args.duration:.0f} s of traffic; swap at {args.swap_at:.0f} s, delete at {args.delete_at:.0f} s, "
          f"edit at {args.edit_at:.0f} s", file=sys.stderr, flush=True)
    outcome = run_on_server(args.repository_copy, workdir / "soak", sorted(models),
                            str(args.keep_server_log) if args.keep_server_log else None, soak.run)

    failures = [asdict(r) for r in soak.records if not r.ok][:50]
    log = read_server_log(workdir / "soak" / "server.log", soak.t0_wall, failures)
    run = {"duration_s": args.duration, "clients": args.clients, "split": split, "environment": software(),
           "repository": f"working copy of {args.source} at {args.repository_copy}",
           "models": ", ".join(f"{m} ({t})" for m, t in sorted(models.items()))
           + f"; version swap on {args.swap_model}, config edit on {args.edit_model}",
           "client": f"raw keep-alive HTTP/1.1 (common.HTTPConnection) on {loop}",
           "request_timeout_s": args.request_timeout, "max_tokens": args.max_tokens,
           "load_start": " ".join(f"{v:.2f}" for v in load_start),
           "load_end": " ".join(f"{v:.2f}" for v in outcome["load_end"])}
    result = build_result(run=run, baselines=baselines, ready=outcome["ready"], wall=outcome["wall"],
                          records=soak.records, events=soak.events, samples=soak.samples, unload=outcome["unload"],
                          usage=outcome["usage"], log=log, failures=failures, warmup=args.warmup,
                          sample_s=args.sample_seconds)
    print(render(result))
    if args.json:
        args.json.write_text(json.dumps(result, indent=2, default=str))
    shutil.rmtree(args.repository_copy, ignore_errors=True)
    print(f"\nTotal runtime {time.perf_counter() - began:.1f}s; logs in {workdir}")
    return 0 if all(goal["met"] for goal in result["goals"]) else 1


if __name__ == "__main__":
    sys.exit(main())
