"""`python -m server validate DIR`: every problem of a repository, each with its path and JSON pointer."""

from __future__ import annotations

from pathlib import Path

from server.pipelines.ir import missing_files
from server.repository import config as model_config
from server.repository.scan import CONFIG_FILE, ModelEntry, scan


def _infer_task(version_path: Path) -> str | None:
    from server.pipelines.ir import infer_task  # reads the IR with OpenVINO

    try:
        return infer_task(version_path)
    except Exception:
        return None


def _model_problems(entry: ModelEntry) -> list[str]:
    where = entry.path
    problems = [f"{where}: {warning}" for warning in entry.warnings]
    if not entry.versions:
        problems.append(f"{where}: no version folders (1/, 2/, ...)")
    if entry.config_raw is None:
        task = _infer_task(entry.versions[max(entry.versions)].path) if entry.versions else None
        if task is None:
            problems.append(f"{where}/{CONFIG_FILE}: missing, and the task cannot be inferred from the files")
    else:
        try:
            config = model_config.parse(entry.config_raw)
            task = config.task
        except model_config.ConfigError as exc:
            return problems + [f"{where}/{CONFIG_FILE}#{p.pointer}: {p.message}" for p in exc.problems]
    if task is not None:
        for number, version in sorted(entry.versions.items()):
            for name in missing_files(task, version.files):
                problems.append(f"{version.path}: missing {name} (needed for task {task})")
    return problems


def validate_repository(root: Path) -> list[str]:
    root = Path(root)
    if not root.is_dir():
        return [f"{root}: not a folder"]
    snapshot = scan(root)
    problems = list(snapshot.warnings)
    for entry in snapshot.models.values():
        problems.extend(_model_problems(entry))
    return problems
