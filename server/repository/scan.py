"""Pure repository scanning: a folder on disk -> an immutable Snapshot, and snapshot diffs.

No loading, no logging and no state here, so every rule of the repository layout is unit-testable.

Layout rules (Triton/OVMS style):
- A model is a folder holding config.json and/or version folders; its id is its path relative to the
  repository root, so `org/name` ids work. Folders above a model are namespaces.
- A version folder's name is a positive integer without leading zeros. Other folders inside a
  model are ignored with a warning.
- Names starting with "." are ignored everywhere: copy to a hidden name, then rename into place,
  to publish atomically. Names that are not UTF-8 are skipped with a warning (no client can send
  such an id, and no metric label can hold it).
- A folder that cannot be listed (EACCES, EMFILE, an NFS error: anything but vanishing) is not a
  removal: Snapshot.unreadable names it, and hold_unreadable keeps what the previous scan saw there.

Symlink rules (the scanner never leaves the repository), at every depth:
- a link is followed only if its target (os.path.realpath) lies inside the repository root;
- a folder link to a folder that contains the link, or that a chain of links leads back to, is a loop;
- a folder link to a folder that has a path of its own without hidden names is an alias (the folder is
  found under that path already) and is not followed; folder links into hidden folders
  (`model/2 -> ../.store/v2`) are the supported way to share or stage folders;
- two paths to one model or namespace folder: the first in name order keeps it, so a model has one id;
- every link not followed, and why, is a warning: in ModelEntry.warnings for links inside a model
  folder, else in Snapshot.warnings. Warnings are stable strings: the same tree gives the same text.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Mapping

CONFIG_FILE = "config.json"

FileStamp = tuple[str, int, int]  # (relative path, size, mtime_ns)


@dataclass(frozen=True)
class VersionEntry:
    version: int
    path: Path
    fingerprint: tuple[FileStamp, ...]
    # Where `path` resolves to: differs when the version folder is (or lies under) a followed link,
    # and then the watcher reports writes under this path.
    real_path: Path | None = None

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
    unreadable: tuple[Path, ...] = ()  # folders whose listing failed for a reason other than vanishing


@dataclass(frozen=True)
class SnapshotDiff:
    added: frozenset[str] = field(default_factory=frozenset)
    removed: frozenset[str] = field(default_factory=frozenset)
    modified: frozenset[str] = field(default_factory=frozenset)

    @property
    def changed(self) -> frozenset[str]:
        return self.added | self.removed | self.modified


MAX_VERSION = 2**63 - 1  # the status APIs address versions as 64-bit integers


def parse_version(name: str) -> int | None:
    """The version number a folder name stands for, or None when it is not a valid version name."""
    if name.isdigit() and name.isascii() and not name.startswith("0") and len(name) <= 19 and int(name) <= MAX_VERSION:
        return int(name)
    return None


def printable(name: str) -> str:
    """`name` with any byte that was not UTF-8 (a lone surrogate from os.fsdecode) written as an escape."""
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _is_utf8(name: str) -> bool:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# ---------------------------------------------------------------- staying inside the repository

Chain = tuple[str, ...]  # real paths of the folders walked through, from the root down


@dataclass(frozen=True)
class _Node:
    """A directory entry that may be read or descended into."""

    name: str
    path: Path  # as ids and loaders see it, through followed links
    real: str  # where it resolves to, inside the repository
    is_dir: bool
    is_link: bool


class _Walk:
    """One scan: the root, and the real model and namespace folders already given an id."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.real_root = os.path.realpath(root)
        self.claimed: dict[str, str] = {}  # real folder -> the id (path) that took it
        self.unreadable: dict[Path, str] = {}  # folder -> why its listing failed

    def rel(self, path: Path | str) -> str:
        return Path(path).relative_to(self.root).as_posix()

    def real_rel(self, real: str) -> str:
        return Path(os.path.relpath(real, self.real_root)).as_posix()

    def inside(self, real: str) -> bool:
        return real == self.real_root or real.startswith(self.real_root.rstrip(os.sep) + os.sep)

    def visible_path(self, real: str) -> str | None:
        """The path of a real folder without hidden names, if it has one: the scan reaches it there."""
        rel = self.real_rel(real)
        return None if any(part.startswith(".") for part in rel.split("/")) else rel


def _visible_entries(path: Path, walk: _Walk) -> list[os.DirEntry]:
    try:
        with os.scandir(path) as it:
            return sorted((e for e in it if not e.name.startswith(".")), key=lambda e: e.name)
    except OSError as exc:
        if exc.errno not in (errno.ENOENT, errno.ENOTDIR):  # vanished: it is gone. Else: not known
            walk.unreadable[Path(path)] = exc.strerror or type(exc).__name__
        return []


def _is_link(entry: os.DirEntry) -> bool:
    try:
        return entry.is_symlink()
    except OSError:
        return False


def _is_dir(entry: os.DirEntry) -> bool:
    try:
        return entry.is_dir(follow_symlinks=False)
    except OSError:
        return False


def _resolve(walk: _Walk, entry: os.DirEntry, chain: Chain) -> tuple[_Node | None, str | None]:
    """`entry` (listed in the folder whose real path ends `chain`) as a node, or (None, why) for a link
    that must not be followed. (None, None) for a dangling link: there is nothing to follow."""
    location = os.path.join(chain[-1], entry.name)
    if not _is_link(entry):
        return _Node(entry.name, Path(entry.path), location, _is_dir(entry), False), None
    rel = walk.rel(entry.path)
    try:
        real = os.path.realpath(location, strict=True)
    except FileNotFoundError:
        return None, None
    except OSError as exc:
        why = "loop" if exc.errno == errno.ELOOP else "cannot be resolved"
        return None, f"symlink '{rel}' skipped: {why} ({exc.strerror})"
    if not walk.inside(real):
        return None, f"symlink '{rel}' skipped: points outside the repository (to {real})"
    if not os.path.isdir(real):
        return _Node(entry.name, Path(entry.path), real, False, True), None
    if any(folder == real or folder.startswith(real + os.sep) for folder in chain):
        return None, f"symlink '{rel}' skipped: loop (points to '{walk.real_rel(real)}', a folder it is inside)"
    visible = walk.visible_path(real)
    if visible is not None:
        return None, f"symlink '{rel}' skipped: alias of '{visible}'"
    return _Node(entry.name, Path(entry.path), real, True, True), None


def _alias_warning(node: _Node, rel: str, other: str) -> str:
    return f"{'symlink' if node.is_link else 'folder'} '{rel}' skipped: alias of '{other}'"


# ---------------------------------------------------------------- one model folder

def _fingerprint(walk: _Walk, path: Path, chain: Chain, warnings: list[str]) -> tuple[FileStamp, ...]:
    """(file, size, mtime) of every visible file under a version folder, links checked like the scan's."""
    stamps: list[FileStamp] = []
    seen: dict[str, str] = {chain[-1]: walk.rel(path)}  # real folders of this version: bounds the walk
    pending = [(path, chain)]
    while pending:
        folder, folder_chain = pending.pop()
        for entry in _visible_entries(folder, walk):
            node, warning = _resolve(walk, entry, folder_chain)
            if warning is not None:
                warnings.append(warning)
            if node is None:
                continue
            if node.is_dir:
                rel = walk.rel(node.path)
                if node.real in seen:
                    warnings.append(_alias_warning(node, rel, seen[node.real]))
                    continue
                seen[node.real] = rel
                pending.append((node.path, folder_chain + (node.real,)))
                continue
            try:
                st = os.stat(node.real)
            except OSError:
                continue
            stamps.append((node.path.relative_to(path).as_posix(), st.st_size, st.st_mtime_ns))
    return tuple(sorted(stamps))


def _read_config(node: _Node | None, skipped: str | None) -> bytes | None:
    if skipped is not None:  # a config.json link that is not followed: report the model's config as broken
        return f"<unreadable: {skipped}>".encode()
    if node is None or node.is_dir:
        return None
    try:
        return Path(node.real).read_bytes()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    except OSError as exc:  # unreadable: let validation report it as a broken config
        return f"<unreadable: {exc.strerror}>".encode()


def _looks_like_model(entries: list[os.DirEntry], nodes: list[_Node]) -> bool:
    return any(e.name == CONFIG_FILE for e in entries) or any(n.is_dir and n.name.isdigit() for n in nodes)


def _scan_model_at(walk: _Walk, path: Path, chain: Chain) -> ModelEntry | None:
    """The model in folder `path` (real path chain[-1]), or None when it is not a model."""
    entries = _visible_entries(path, walk)
    nodes: list[_Node] = []
    warnings: list[str] = []
    config_node, config_skipped = None, None
    for entry in entries:
        node, warning = _resolve(walk, entry, chain)
        if entry.name == CONFIG_FILE:
            config_node, config_skipped = node, warning
        if warning is not None:
            warnings.append(warning)
        if node is not None:
            nodes.append(node)
    if not _looks_like_model(entries, nodes):
        return None
    versions: dict[int, VersionEntry] = {}
    for node in nodes:
        if not node.is_dir:
            continue
        number = parse_version(node.name)
        if number is None:
            warnings.append(f"ignored folder '{printable(node.name)}': a version folder name is a positive integer "
                            f"without leading zeros, at most {MAX_VERSION}")
            continue
        fingerprint = _fingerprint(walk, node.path, chain + (node.real,), warnings)
        versions[number] = VersionEntry(number, node.path, fingerprint, Path(node.real))
    return ModelEntry(walk.rel(path), path, _read_config(config_node, config_skipped), versions, tuple(warnings))


def _locate(walk: _Walk, model_id: str) -> tuple[Path, Chain] | None:
    """Follow a model id from the root, component by component, under the scan's link rules."""
    path, chain = walk.root, (walk.real_root,)
    for part in Path(model_id).parts:
        entry = next((e for e in _visible_entries(path, walk) if e.name == part), None)
        if entry is None:
            return None
        node, _ = _resolve(walk, entry, chain)
        if node is None or not node.is_dir:
            return None
        path, chain = node.path, chain + (node.real,)
    return path, chain


def scan_model(root: Path, model_id: str) -> ModelEntry | None:
    """The entry of one model folder, or None when the folder is not (or no longer) a model."""
    walk = _Walk(Path(root))
    located = _locate(walk, model_id)
    return None if located is None else _scan_model_at(walk, *located)


# ---------------------------------------------------------------- the repository

def scan(root: Path) -> Snapshot:
    """Every model under root. Never raises for what is inside the repository, never reads outside it."""
    walk = _Walk(Path(root))
    models: dict[str, ModelEntry] = {}
    warnings: list[str] = []
    # Depth first in name order (a stack of (entry, chain of its folder)), so that which of two paths to
    # one folder keeps it does not depend on anything but the names.
    pending = [(entry, (walk.real_root,)) for entry in reversed(_visible_entries(walk.root, walk))]
    while pending:
        entry, chain = pending.pop()
        if not _is_utf8(entry.name):
            warnings.append(f"'{printable(walk.rel(entry.path))}' skipped: the name is not valid UTF-8")
            continue
        node, warning = _resolve(walk, entry, chain)
        if warning is not None:
            warnings.append(warning)
        if node is None or not node.is_dir:
            continue
        rel = walk.rel(node.path)
        if node.real in walk.claimed:
            warnings.append(_alias_warning(node, rel, walk.claimed[node.real]))
            continue
        walk.claimed[node.real] = rel
        inner = chain + (node.real,)
        model = _scan_model_at(walk, node.path, inner)
        if model is not None:
            models[rel] = model
        else:  # a namespace folder such as `org/`
            pending.extend((child, inner) for child in reversed(_visible_entries(node.path, walk)))
    for folder, why in walk.unreadable.items():
        rel = walk.rel(folder) if folder != walk.root else "."
        warnings.append(f"folder '{printable(rel)}' could not be listed ({why}); what it held keeps its previous state")
    return Snapshot(walk.root, dict(sorted(models.items())), tuple(warnings), tuple(walk.unreadable))


def hold_unreadable(new: Snapshot, previous: Snapshot | None) -> Snapshot:
    """`new`, except under folders that could not be listed: the models and version folders that
    `previous` saw there keep their entries, since an error listing a folder says nothing about what
    it holds (a vanished folder is not unreadable: it is gone)."""
    if not new.unreadable or previous is None:
        return new
    blocked = frozenset(new.unreadable)

    def under(path: Path) -> bool:  # the folder itself, or one above it, could not be listed
        return path in blocked or not blocked.isdisjoint(path.parents)

    def touched(path: Path) -> bool:  # ... or one inside it: its fingerprint is incomplete
        return under(path) or any(path in folder.parents for folder in blocked)

    before = previous.models
    models = dict(new.models)
    for model_id in sorted(new.models.keys() | before.keys()):
        old, entry = before.get(model_id), new.models.get(model_id)
        if old is not None and under(old.path):  # the model folder, a namespace above it, or the root
            models[model_id] = old
            continue
        if entry is None:
            continue
        versions = {}
        for number, version in entry.versions.items():
            if not touched(version.path):
                versions[number] = version
            elif old is not None and number in old.versions:
                versions[number] = old.versions[number]  # as the previous scan saw it
            # else: a new version that could not be read whole is left out until it can
        if versions != dict(entry.versions):
            models[model_id] = replace(entry, versions=dict(sorted(versions.items())))
    return replace(new, models=dict(sorted(models.items())))


def diff(old: Snapshot | None, new: Snapshot) -> SnapshotDiff:
    before = old.models if old else {}
    after = new.models
    return SnapshotDiff(
        added=frozenset(after.keys() - before.keys()),
        removed=frozenset(before.keys() - after.keys()),
        modified=frozenset(m for m in after.keys() & before.keys() if after[m] != before[m]),
    )


# ---------------------------------------------------------------- holding back what is still being written

def hold_unsettled(new: Snapshot, previous: Snapshot | None, unsettled: frozenset[Path]) -> Snapshot:
    """`new`, except where files are still being written (`unsettled`: paths written to within the
    settle time): such a version folder or config.json keeps its state of `previous`, and what
    `previous` did not have yet is left out, so nothing half-written is loaded. Models whose folder
    is still being written keep their previous entry if they were removed meanwhile."""
    if not unsettled:
        return new
    marked = frozenset(p for path in unsettled for p in (path, *path.parents))  # written paths and their folders
    before = previous.models if previous is not None else {}
    models: dict[str, ModelEntry] = {}
    for model_id in sorted(new.models.keys() | before.keys()):
        entry = _hold_model(new.models.get(model_id), before.get(model_id), marked)
        if entry is not None:
            models[model_id] = entry
    return replace(new, models=models)


def _hold_model(new: ModelEntry | None, old: ModelEntry | None, marked: frozenset[Path]) -> ModelEntry | None:
    if new is None:
        return old if old is not None and old.path in marked else None
    config_raw = new.config_raw
    if new.path / CONFIG_FILE in marked:
        if old is None:
            return None  # a new model whose config.json is still being written: not yet
        config_raw = old.config_raw
    versions: dict[int, VersionEntry] = {}
    held = False
    for number in sorted(new.versions.keys() | (old.versions.keys() if old else set())):
        current = new.versions.get(number)
        before = old.versions.get(number) if old else None
        if any(_touched(v, marked) for v in (current, before) if v is not None):
            held = True
            current = before
        if current is not None:
            versions[number] = current
    if old is None and held and not versions:
        return None  # every version of a new model is still arriving: show it once one is complete
    if config_raw == new.config_raw and not held:
        return new
    return replace(new, config_raw=config_raw, versions=versions)


def _touched(version: VersionEntry, marked: frozenset[Path]) -> bool:
    return version.path in marked or (version.real_path is not None and version.real_path in marked)
