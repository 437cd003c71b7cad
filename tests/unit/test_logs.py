"""Log set-up: one JSON object per line on stderr, for the server's own events and other libraries'
stdlib records alike, filtered by level; values orjson refuses still reach the log."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def stderr_lines(code: str, log_format: str = "json", level: str = "info") -> list[str]:
    script = textwrap.dedent(f"""
        import logging, structlog
        from server.logs import configure_logging
        configure_logging({log_format!r}, {level!r})
        log = structlog.get_logger("server.test")
    """) + textwrap.dedent(code)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True)
    return done.stderr.splitlines()


def test_own_and_foreign_events_are_json_lines_with_the_same_fields() -> None:
    lines = stderr_lines("""
        structlog.contextvars.bind_contextvars(request_id="r1")
        log.info("request", status=200, latency_ms=1.5)
        logging.getLogger("sanic.root").warning("listening on %s", 8000)
    """)
    own, foreign = map(json.loads, lines)
    assert own["event"] == "request" and own["status"] == 200 and own["latency_ms"] == 1.5
    assert foreign["event"] == "listening on 8000"
    for record in (own, foreign):
        assert record["request_id"] == "r1" and record["timestamp"].endswith("Z")
    assert (own["level"], foreign["level"]) == ("info", "warning")


def test_level_filters_both_kinds_of_event() -> None:
    lines = stderr_lines("""
        log.info("dropped")
        logging.getLogger("sanic.root").info("dropped too")
        log.warning("kept")
        logging.getLogger("sanic.root").error("kept too")
    """, level="warning")
    assert [json.loads(line)["event"] for line in lines] == ["kept", "kept too"]


def test_values_orjson_refuses_are_still_written() -> None:
    lines = stderr_lines("""
        log.info("big", value=2**70)
        log.info("surrogate", text="\\ud800")
        log.info("object", thing=object(), keys={1: "one"})
    """)
    big, surrogate, thing = map(json.loads, lines)
    assert big["value"] == 2**70
    assert surrogate["text"] == "\ud800"
    assert thing["thing"].startswith("<object object") and thing["keys"] == {"1": "one"}


def test_exceptions_carry_their_traceback() -> None:
    lines = stderr_lines("""
        try:
            1 / 0
        except ZeroDivisionError:
            log.exception("failed", model="m")
    """)
    record = json.loads(lines[0])
    assert record["level"] == "error" and "ZeroDivisionError" in record["exception"]


def test_console_format_is_one_readable_line_per_event() -> None:
    lines = stderr_lines('log.info("model_ready", model="m")', log_format="console")
    assert len(lines) == 1 and "model_ready" in lines[0] and "model" in lines[0]
