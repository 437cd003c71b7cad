"""The statistics and the report of tools/bench/soak.py, on made-up records (no server)."""

from __future__ import annotations

import json
import math

import pytest

from tests.unit.bench_modules import bench_module



@pytest.fixture(scope="module")
def soak():
    yield from bench_module("soak.py")


def record(soak, kind, start, end, status="ok", tokens=0, ttft=None, rid=""):
    return soak.Record(kind, "m", start, end, status, tokens, ttft, rid, "" if status == "ok" else "boom")


def sample(soak, t, server, workers=(), others=0.0):
    return soak.Sample(t, server, {1000 + i: mb for i, mb in enumerate(workers)}, others, 0.5)


def test_kind_summary_counts_rates_percentiles_and_errors(soak) -> None:
    records = [record(soak, "chat_stream", i, i + 0.1 * (i + 1), tokens=10, ttft=0.01 * (i + 1)) for i in range(10)]
    records += [record(soak, "chat_stream", 20, 21, "503"), record(soak, "chat_stream", 20, 21, "conn"),
                record(soak, "embeddings", 0, 0.2), record(soak, "embeddings", 1, 1.1, "429")]
    summary = soak.kind_summary(records, wall=10.0)
    chat = summary["chat_stream"]
    assert (chat["requests"], chat["ok"], chat["failed"]) == (12, 10, 2)
    assert chat["requests_per_s"] == pytest.approx(1.0)
    assert chat["tokens"] == 100 and chat["tokens_per_s"] == pytest.approx(10.0)
    assert chat["p50_ms"] == pytest.approx(550.0)  # latencies 0.1 .. 1.0 s, failures left out
    assert chat["p99_ms"] == pytest.approx(991.0)
    assert chat["ttft_p50_ms"] == pytest.approx(55.0)
    assert chat["errors"] == {"503": 1, "conn": 1}
    assert summary["embeddings"]["errors"] == {"429": 1}
    assert math.isnan(summary["embeddings"]["ttft_p50_ms"])
    assert summary["rerank"]["requests"] == 0 and math.isnan(summary["rerank"]["p50_ms"])


def test_requests_around_an_event_are_those_overlapping_its_window(soak) -> None:
    event = soak.Event("swap", "m", start=10.0, done=12.0)  # window [9, 17]
    records = [
        record(soak, "embeddings", 5.0, 8.9),  # ended before the window
        record(soak, "embeddings", 8.0, 9.5),  # overlaps its start
        record(soak, "embeddings", 11.0, 11.2, "503"),
        record(soak, "rerank", 16.9, 18.0),  # starts inside
        record(soak, "rerank", 17.1, 18.0),  # after
    ]
    [around] = soak.requests_around(records, [event])
    assert around["window"] == [9.0, 17.0]
    assert around["requests"] == 3 and around["failed"] == 1
    assert around["kinds"]["embeddings"] == {"requests": 2, "failed": 1, "errors": {"503": 1}}
    assert around["kinds"]["rerank"]["requests"] == 1
    unsettled = soak.Event("edit", "m", start=10.0)  # never settled: the window runs to the timeout
    assert soak.requests_around([], [unsettled])[0]["window"][1] == 10.0 + soak.EVENT_TIMEOUT_S + soak.AROUND_AFTER_S


def test_rss_growth_compares_the_last_window_with_the_first_after_warm_up(soak) -> None:
    first, last = soak.growth_windows(600, 30)
    assert (first, last) == ((30, 90), (540, 600))
    assert soak.growth_windows(60, 6) == ((6, 19.5), (46.5, 60))
    samples = [sample(soak, t, 400.0 if t < 30 else (200.0 if t < 300 else 220.0), workers=[100.0], others=10)
               for t in range(0, 600, 5)]
    growth = soak.rss_growth(samples, first, last)
    assert growth["server"] == {"first_mb": 200.0, "last_mb": 220.0, "growth_pct": pytest.approx(10.0)}
    assert growth["workers"]["growth_pct"] == pytest.approx(0.0)
    assert growth["total"]["first_mb"] == pytest.approx(310.0)
    assert math.isnan(soak.rss_growth([], first, last)["server"]["growth_pct"])


def test_worker_lifetimes_follow_each_pid(soak) -> None:
    samples = [soak.Sample(0, 1, {7: 100.0}, 0, 0), soak.Sample(5, 1, {7: 150.0, 8: 90.0}, 0, 0),
               soak.Sample(10, 1, {8: 120.0}, 0, 0)]
    assert soak.worker_lifetimes(samples) == [
        {"pid": 7, "first_t": 0, "first_mb": 100.0, "max_mb": 150.0, "last_t": 5, "last_mb": 150.0},
        {"pid": 8, "first_t": 5, "first_mb": 90.0, "max_mb": 120.0, "last_t": 10, "last_mb": 120.0},
    ]


def goals_by_name(goals):
    return {goal["goal"].split(" within")[0].split(" across")[0]: goal for goal in goals}


def test_goals(soak) -> None:
    kinds = soak.kind_summary([record(soak, "rerank", 0, 1, "503"), record(soak, "rerank", 0, 1)], 1.0)
    event = soak.Event("swap", "m", 0.0, 1.0)
    around = soak.requests_around([], [event])
    growth = {"server": {"growth_pct": 9.9}, "workers": {"growth_pct": 2.0}, "total": {"growth_pct": 5.0}}
    unload = {"server_mb": 165.0, "fresh_server_mb": 150.0, "workers": 0}
    goals = goals_by_name(soak.evaluate_goals(kinds, around, growth, unload, [event]))
    assert all(goal["met"] for goal in goals.values()), goals
    assert "429/503: 1" in goals["no error other than 429/503"]["detail"]

    kinds = soak.kind_summary([record(soak, "chat_unary", 0, 1, "500"), record(soak, "rerank", 0, 1, "stream-error")], 1.0)
    around = soak.requests_around([record(soak, "rerank", 0.5, 0.6, "503")], [event])
    growth["workers"]["growth_pct"] = 10.5
    unload["server_mb"] = 166.0
    goals = goals_by_name(soak.evaluate_goals(kinds, around, growth, unload, [event]))
    assert not any(goal["met"] for goal in goals.values()), goals
    assert "chat_unary 500: 1" in goals["no error other than 429/503"]["detail"]
    assert "swap: 1 failed of 1" in goals["zero failed requests"]["detail"]

    unsettled = soak.Event("edit", "m", 0.0, None, error="still reloading")
    goals = goals_by_name(soak.evaluate_goals(kinds, soak.requests_around([], [unsettled]), growth, None, [unsettled]))
    assert not goals["zero failed requests"]["met"] and "not settled: edit" in goals["zero failed requests"]["detail"]
    assert not goals["RSS after unloading"]["met"] and goals["RSS after unloading"]["detail"] == "not measured"


def test_build_result_renders_and_serializes(soak) -> None:
    records = [record(soak, kind, t, t + 0.05, tokens=10 if kind.startswith("chat") else 0,
                      ttft=0.01 if kind == "chat_stream" else None)
               for t in range(60) for kind in soak.KINDS]
    records.append(record(soak, "embeddings", 20.5, 20.6, "503", rid="soak-2-41"))
    events = [soak.Event("swap", "minilm", 15.0, 16.8, "minilm version 2 published", {"v2 AVAILABLE": 16.6}),
              soak.Event("edit", "tiny-chat", 33.0, 35.4, "max_num_seqs 16 -> 12")]
    samples = [sample(soak, t, 300 + t / 10, workers=[120.0] if t < 35 else [125.0], others=39) for t in range(0, 60, 5)]
    run = {"duration_s": 60.0, "clients": 8, "split": "chat_stream 2, chat_unary 2, embeddings 2, rerank 2",
           "environment": "test", "repository": "r", "models": "m", "client": "c", "request_timeout_s": 120.0,
           "max_tokens": 16, "load_start": "0.1 0.2 0.3", "load_end": "1.0 1.0 1.0"}
    baselines = {"empty_server_mb": 90.0, "fresh_loaded_server_mb": 310.0, "fresh_loaded_workers": 1,
                 "fresh_loaded_workers_mb": 120.0, "fresh_unloaded_server_mb": 156.0, "fresh_unloaded_workers": 0}
    unload = {"answers": {"200": 4}, "end_after_s": 0.5, "workers_gone_after_s": 0.5, "server_mb": 160.0,
              "others_mb": 39.0, "workers": 0}
    failures = [{"start": 20.5, "end": 20.6, "kind": "embeddings", "model": "m", "status": "503", "detail": "not ready",
                 "request_id": "soak-2-41", "log": ['{"status": 503}']}]
    log = {"path": "server.log", "lines": 10, "warnings": 0, "errors": 0, "tracebacks": 0, "non_json": 0,
           "timeline": [{"t": 16.6, "text": "minilm v2 LOADING -> AVAILABLE (loaded)"}], "problems": []}
    result = soak.build_result(run=run, baselines=baselines, ready=samples[0], wall=60.0, records=records,
                               events=events, samples=samples, unload=unload,
                               usage={"server_cores": 1.8, "client_cores": 0.1, "foreign_cores": 0.02}, log=log,
                               failures=failures, warmup=6.0, sample_s=5.0)
    goals = goals_by_name(result["goals"])
    assert goals["no error other than 429/503"]["met"]
    assert not goals["zero failed requests"]["met"]  # the 503 at 20.5 s is inside the swap's window [14, 21.8]
    assert goals["RSS flat"]["met"] and goals["RSS after unloading"]["met"]
    text = soak.render(result)
    for expected in ("chat_stream", "Errors by status per kind", "embeddings     503      1", "window 14.0-21.8 s",
                     "X-Request-ID soak-2-41", "RSS growth", "NOT met  zero failed requests", "MET      RSS flat",
                     "fresh server after unload 156.0 MB (+2.6 %)", "Fair comparison"):
        assert expected in text, expected
    json.dumps(result, default=str)  # what --json writes
