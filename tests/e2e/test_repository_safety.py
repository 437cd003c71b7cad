"""The repository cannot be turned against the server: symlinks never lead the scanner out of it or
round in circles, and a steady stream of writes cannot stop changes from being applied."""

from __future__ import annotations

import contextlib
import os
import threading
from pathlib import Path
from typing import Iterator

from tests.e2e.harness import ServerProcess, copy_model, wait_for


def _warnings(server: ServerProcess, text: str) -> list[dict]:
    return [e for e in server.log_events("repository_warning") if text in e.get("message", "")]


def _served_ids(server: ServerProcess) -> set[str]:
    return {name for name, _ in server.index()}


@contextlib.contextmanager
def _written_every(path: Path, seconds: float) -> Iterator[None]:
    stop = threading.Event()

    def write() -> None:
        count = 0
        with path.open("a") as log:
            while not stop.is_set():
                count += 1
                log.write(f"line {count}\n")
                log.flush()
                stop.wait(seconds)

    thread = threading.Thread(target=write, daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join()


def test_a_link_to_the_filesystem_root_is_skipped_and_changes_keep_coming(server: ServerProcess, models: Path) -> None:
    link = server.repository / "rootlink"
    os.symlink("/", link)
    try:
        copy_model(models / "tiny-embed", server.repository / "after-rootlink" / "embed")
        server.wait_states("after-rootlink/embed", {"1": "AVAILABLE"})
        text = "symlink 'rootlink' skipped: points outside the repository (to /)"
        wait_for(lambda: _warnings(server, text), what="the skipped link in the log")
        # Later rescans see the same link: it is logged once, when it first appears.
        copy_model(models / "tiny-embed", server.repository / "after-rootlink" / "second")
        server.wait_states("after-rootlink/second", {"1": "AVAILABLE"})
        assert len(_warnings(server, text)) == 1
    finally:
        link.unlink()


def test_a_symlink_loop_shows_the_model_once(server: ServerProcess, models: Path) -> None:
    namespace = server.repository / "loop"
    namespace.mkdir()
    os.symlink(".", namespace / "again")
    copy_model(models / "tiny-embed", namespace / "embed")
    server.wait_states("loop/embed", {"1": "AVAILABLE"})
    assert {m for m in _served_ids(server) if m.startswith("loop/")} == {"loop/embed"}
    wait_for(lambda: _warnings(server, "symlink 'loop/again' skipped: loop (points to 'loop', a folder it is inside)"),
             what="the loop in the log")


def test_a_link_to_a_model_outside_is_not_served(server: ServerProcess, models: Path, tmp_path: Path) -> None:
    outside = copy_model(models / "tiny-embed", tmp_path / "outside-model")
    os.symlink(outside, server.repository / "borrowed")
    text = f"symlink 'borrowed' skipped: points outside the repository (to {outside.resolve()})"
    wait_for(lambda: _warnings(server, text), what="the skipped link in the log")
    assert "borrowed" not in _served_ids(server)
    assert server.get("/v1/models/borrowed").status_code == 404


def test_a_model_added_during_steady_writes_becomes_available(server: ServerProcess, models: Path) -> None:
    with _written_every(server.repository / "activity.log", 0.2):
        copy_model(models / "tiny-embed", server.repository / "during-writes" / "embed")
        server.wait_states("during-writes/embed", {"1": "AVAILABLE"})


def test_a_version_file_linked_outside_the_repository_is_never_opened(server: ServerProcess, models: Path,
                                                                       tmp_path: Path) -> None:
    outside = tmp_path / "outside-weights.bin"
    outside.write_bytes((models / "tiny-embed" / "1" / "openvino_model.bin").read_bytes())
    staging = server.repository / ".linked-file"
    copy_model(models / "tiny-embed", staging)
    (staging / "1" / "openvino_model.bin").unlink()
    os.symlink(outside, staging / "1" / "openvino_model.bin")
    staging.rename(server.repository / "linked-file")

    def refused() -> dict | None:
        status = server.get("/v1/models/linked-file").json().get("model_version_status", [])
        return status[0] if status and status[0]["state"] == "END" else None
    status = wait_for(refused, what="the version refused")
    assert status["status"]["error_code"] == "FAILED_PRECONDITION"
    assert "outside the model repository" in status["status"]["error_message"]


def test_files_of_a_serving_version_overwritten_in_place_do_not_take_it_down(models: Path, tmp_path: Path) -> None:
    """`cp new.bin m/1/openvino_model.bin` truncates the file the server loaded, then writes it. OpenVINO
    maps weight files into memory by default, so a truncated file killed the whole server with SIGBUS
    at the next embeddings or tokenizer call (and the generation worker at its next step), and a file
    rewritten in place changed the weights under a serving model. Served models are read into memory of
    their own: the copy that serves keeps serving, and the reload of the broken files fails alone."""
    import openai
    from tests.e2e.harness import running_server

    root = tmp_path / "repository"
    root.mkdir()
    with running_server(root, {"chat": models / "tiny-chat", "embed": models / "minilm"}) as server:
        client = openai.OpenAI(base_url=server.url("/v3"), api_key="unused", max_retries=0)
        before = client.embeddings.create(model="embed", input="a sentence").data[0].embedding
        stream = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=300, stream=True, extra_body={"ignore_eos": True})
        first = next(iter(stream))  # the stream is running on the worker
        assert first.choices[0].delta.role == "assistant"
        for model in ("chat", "embed"):
            for path in sorted((root / model / "1").glob("*.bin")):
                with path.open("r+b") as file:
                    file.truncate(0)  # what cp does to the file before it writes the new one
        finishes = [chunk.choices[0].finish_reason for chunk in stream if chunk.choices]
        assert finishes[-1] == "length"
        after = client.embeddings.create(model="embed", input="a sentence").data[0].embedding
        assert after == before
        answer = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}],
                                                max_tokens=4)
        assert answer.choices[0].message.content is not None

        def reload_failed(model: str) -> bool:
            (status,) = server.get(f"/v1/models/{model}").json()["model_version_status"]
            return status["state"] == "AVAILABLE" and "reload failed" in status["status"]["error_message"]

        for model in ("chat", "embed"):
            wait_for(lambda: reload_failed(model), what=f"{model}'s reload of the truncated files failed")
        assert client.embeddings.create(model="embed", input="a sentence").data[0].embedding == before
        assert server.process.poll() is None


def test_a_folder_name_that_is_not_utf8_is_skipped_and_metrics_keep_working(server: ServerProcess,
                                                                            models: Path) -> None:
    """A Latin-1 name from an old archive: as a model id it became a metric label, and every /metrics
    answer failed with a 500 until a restart."""
    import shutil

    staging = server.repository / ".latin1-incoming"
    shutil.copytree(models / "tiny-embed", staging)
    os.rename(os.fsencode(staging), os.path.join(os.fsencode(server.repository), b"mod\xe8le"))
    assert server.post("/v1/config/reload").status_code == 200  # rescans and waits for the loads
    assert server.get("/metrics").status_code == 200
    assert _warnings(server, "not valid UTF-8")
    assert not any(name.startswith("mod") for name in _served_ids(server))
