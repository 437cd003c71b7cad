"""Pure repository scanning: a folder on disk -> an immutable Snapshot, and snapshot diffs.

No loading and no state here, so every rule of the repository layout is unit-testable.

Layout rules (Triton/OVMS style):
- A model is a folder holding config.json and/or version folders; its id is its path relative
  to the repository root, so `org/name` ids work. Folders above a model are namespaces.
- A version folder's name is a positive integer without leading zeros. Other folders inside a
  model are ignored with a warning.
- Names starting with "." are ignored everywhere: copy to a hidden name, then rename into place,
  to publish atomically.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping

CONFIG_FILE = "config.json"

FileStamp = tuple[str, int, int]  # (relative path, size, mtime_ns)


@dataclass(frozen=True)
class VersionEntry:
    version: int
    path: Path
    fingerprint: tuple[FileStamp, ...]

    @property
    def files(self) -> frozenset[str]:
        return frozenset(stamp[0] for stamp in self.fingerprint)


@dataclass(frozen=True)
class ModelEntry:
    model_id: str
    path: Path
    config_raw: bytes | None  # None when the folder has no config.json
    versions: Mapping[int, VersionEntry]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class Snapshot:
    root: Path
    models: Mapping[str, ModelEntry]
    warnings: tuple[str, ...] = ()


@dataclass(frozen=True)
class SnapshotDiff:
    added: frozenset[str] = field(default_factory=frozenset)
    removed: frozenset[str] = field(default_factory=frozenset)
    modified: frozenset[str] = field(default_factory=frozenset)

    @property
    def changed(self) -> frozenset[str]:
        return self.added | self.removed | self.modified


def parse_version(name: str) -> int | None:
    """The version number a folder name stands for, or None when it is not a valid version name."""
    if name.isdigit() and name.isascii() and not name.startswith("0"):
        return int(name)
    return None


def _visible_entries(path: Path) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return []  # vanished or unreadable while scanning: it shows up (or not) in the next scan


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir()
    except OSError:
        return False


def _fingerprint(path: Path) -> tuple[FileStamp, ...]:
    stamps: list[FileStamp] = []
    for dirpath, dirnames, filenames in os.walk(path):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in sorted(filenames):
            if name.startswith("."):
                continue
            full = Path(dirpath) / name
            try:
                st = full.stat()
            except OSError:
                continue
            stamps.append((full.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(stamps)


def _read_config(path: Path) -> bytes | None:
    try:
        return (path / CONFIG_FILE).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:  # unreadable: let validation report it as a broken config
        return f"<unreadable: {exc.strerror}>".encode()


def _looks_like_model(entries: list[os.DirEntry]) -> bool:
    return any(e.name == CONFIG_FILE for e in entries) or any(_is_dir(e) and e.name.isdigit() for e in entries)


def scan_model(root: Path, model_id: str) -> ModelEntry | None:
    """The entry of one model folder, or None when the folder is not (or no longer) a model."""
    path = root / model_id
    entries = _visible_entries(path)
    if not _looks_like_model(entries):
        return None
    versions: dict[int, VersionEntry] = {}
    warnings: list[str] = []
    for entry in entries:
        if not _is_dir(entry):
            continue
        number = parse_version(entry.name)
        if number is None:
            warnings.append(f"ignored folder '{entry.name}': a version folder name is a positive integer without leading zeros")
            continue
        versions[number] = VersionEntry(number, Path(entry.path), _fingerprint(Path(entry.path)))
    return ModelEntry(model_id, path, _read_config(path), versions, tuple(warnings))


def scan(root: Path) -> Snapshot:
    """Every model under root. Never raises for what is inside the repository."""
    root = Path(root)
    models: dict[str, ModelEntry] = {}
    pending = [root]
    while pending:
        folder = pending.pop()
        for entry in _visible_entries(folder):
            if not _is_dir(entry):
                continue
            model_id = Path(entry.path).relative_to(root).as_posix()
            model = scan_model(root, model_id)
            if model is not None:
                models[model_id] = model
            else:
                pending.append(Path(entry.path))  # a namespace folder such as `org/`
    return Snapshot(root, dict(sorted(models.items())))


def diff(old: Snapshot | None, new: Snapshot) -> SnapshotDiff:
    before = old.models if old else {}
    after = new.models
    return SnapshotDiff(
        added=frozenset(after.keys() - before.keys()),
        removed=frozenset(before.keys() - after.keys()),
        modified=frozenset(m for m in after.keys() & before.keys() if after[m] != before[m]),
    )
