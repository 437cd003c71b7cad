"""`python -m server validate DIR`: every problem with its path and JSON pointer, exit 1 if any."""

import json
import subprocess
import sys
from pathlib import Path

from tests.unit.fakes import write_model

ROOT = Path(__file__).resolve().parents[2]


def run_validate(directory: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "server", "validate", str(directory)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)


def test_problems_are_listed_with_path_and_pointer(tmp_path: Path) -> None:
    write_model(tmp_path, "org/bad", config={"task": "rerank", "model_version_policy": {"latest": {}}})
    model = write_model(tmp_path, "incomplete", config={"task": "embeddings"})
    (model / "01").mkdir()
    result = run_validate(tmp_path)
    assert result.returncode == 1
    lines = result.stdout.splitlines()
    assert f"{tmp_path}/org/bad/config.json#/model_version_policy/latest: 'num_versions' is a required property" in lines
    assert any(line.startswith(f"{model}: ignored folder '01'") for line in lines)
    assert f"{model}/1: missing openvino_model.xml (needed for task embeddings)" in lines


def test_a_valid_repository_passes(tmp_path: Path) -> None:
    model = write_model(tmp_path, "ok", config={"task": "embeddings"})
    for name in ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml"):
        (model / "1" / name).write_text("x")
    result = run_validate(tmp_path)
    assert (result.returncode, result.stdout.strip()) == (0, "repository is valid")
    (model / "config.json").write_text(json.dumps({"task": "embeddings", "typo": 1}))
    assert run_validate(tmp_path).returncode == 1
