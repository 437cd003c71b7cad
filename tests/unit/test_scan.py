import os
import shutil
from pathlib import Path
from typing import Iterator

import pytest

from server.repository.scan import Snapshot, diff, hold_unsettled, parse_version, scan, scan_model
from tests.unit.fakes import write_model, write_version


def test_version_names_are_positive_integers_without_leading_zeros() -> None:
    assert parse_version("1") == 1
    assert parse_version("12") == 12
    for bad in ("0", "01", "-1", "v1", "1.0", "", "١"):
        assert parse_version(bad) is None, bad


def test_models_are_found_at_any_depth_with_path_ids(tmp_path: Path) -> None:
    write_model(tmp_path, "plain", config={"task": "embeddings"})
    write_model(tmp_path, "org/name", versions=(1, 2))
    (tmp_path / "org" / "notes").mkdir()  # a namespace folder without models: not a model
    snapshot = scan(tmp_path)
    assert list(snapshot.models) == ["org/name", "plain"]
    assert sorted(snapshot.models["org/name"].versions) == [1, 2]
    assert snapshot.models["org/name"].config_raw is None
    assert snapshot.models["plain"].config_raw == b'{"task": "embeddings"}'


def test_bad_version_folders_are_ignored_with_a_warning(tmp_path: Path) -> None:
    path = write_model(tmp_path, "m", versions=(1,))
    (path / "01").mkdir()
    (path / "latest").mkdir()
    (path / "0").mkdir()
    entry = scan(tmp_path).models["m"]
    assert list(entry.versions) == [1]
    assert len(entry.warnings) == 3
    assert any("'01'" in w for w in entry.warnings)


def test_hidden_names_are_ignored_so_rename_publishes_atomically(tmp_path: Path) -> None:
    write_model(tmp_path, ".incoming", versions=(1,))
    path = write_model(tmp_path, "m", versions=(1,))
    (path / "1" / ".partial.bin").write_text("x")
    (path / ".2").mkdir()
    snapshot = scan(tmp_path)
    assert list(snapshot.models) == ["m"]
    assert snapshot.models["m"].versions[1].files == {"weights.txt"}


def test_diff_reports_added_removed_and_modified(tmp_path: Path) -> None:
    write_model(tmp_path, "a", versions=(1,))
    write_model(tmp_path, "b", versions=(1,))
    before = scan(tmp_path)
    write_model(tmp_path, "c", versions=(1,))
    write_version(tmp_path / "a", 2)
    import shutil

    shutil.rmtree(tmp_path / "b")
    changes = diff(before, scan(tmp_path))
    assert changes.added == {"c"}
    assert changes.removed == {"b"}
    assert changes.modified == {"a"}
    assert diff(scan(tmp_path), scan(tmp_path)).changed == set()


def test_editing_a_file_changes_the_fingerprint(tmp_path: Path) -> None:
    path = write_model(tmp_path, "m", versions=(1,))
    before = scan_model(tmp_path, "m")
    (path / "1" / "weights.txt").write_text("longer weights")
    after = scan_model(tmp_path, "m")
    assert before.versions[1].fingerprint != after.versions[1].fingerprint


def test_scan_of_missing_root_or_model_is_empty(tmp_path: Path) -> None:
    assert scan(tmp_path / "missing").models == {}
    assert scan_model(tmp_path, "missing") is None


# ---------------------------------------------------------------- symlinks: the scan never leaves the repository

@pytest.fixture
def listed(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every folder the scan lists, resolved."""
    folders: list[str] = []
    real_scandir = os.scandir

    def recording_scandir(path: os.PathLike | str = ".") -> Iterator[os.DirEntry]:
        folders.append(os.path.realpath(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", recording_scandir)
    return folders


def _repository(tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    write_model(root, "m", versions=(1,))
    return root


def _inside(folder: str, root: Path) -> bool:
    return Path(folder) == root.resolve() or root.resolve() in Path(folder).parents


def test_a_link_to_the_filesystem_root_is_skipped_with_a_warning(tmp_path: Path, listed: list[str]) -> None:
    root = _repository(tmp_path)
    os.symlink("/", root / "rootlink")
    snapshot = scan(root)
    assert list(snapshot.models) == ["m"]
    assert snapshot.warnings == ("symlink 'rootlink' skipped: points outside the repository (to /)",)
    assert listed and all(_inside(folder, root) for folder in listed)


def test_a_link_to_a_model_outside_is_not_served(tmp_path: Path, listed: list[str]) -> None:
    root = _repository(tmp_path)
    outside = write_model(tmp_path / "elsewhere", "model", versions=(1,))
    os.symlink(outside, root / "borrowed")
    os.symlink(outside, root / "m" / "2")  # as a version folder too
    snapshot = scan(root)
    assert list(snapshot.models) == ["m"]
    assert snapshot.warnings == (f"symlink 'borrowed' skipped: points outside the repository (to {outside.resolve()})",)
    assert list(snapshot.models["m"].versions) == [1]
    assert snapshot.models["m"].warnings == (f"symlink 'm/2' skipped: points outside the repository (to {outside.resolve()})",)
    assert all(_inside(folder, root) for folder in listed)
    assert scan_model(root, "borrowed") is None  # explicit loads follow the same rules


def test_a_link_to_a_containing_folder_is_a_loop_and_the_model_appears_once(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_model(root, "ns/m", versions=(1,))
    os.symlink(".", root / "ns" / "again")
    os.symlink("..", root / "ns" / "m" / "1" / "up")
    snapshot = scan(root)
    assert list(snapshot.models) == ["ns/m"]
    assert snapshot.warnings == ("symlink 'ns/again' skipped: loop (points to 'ns', a folder it is inside)",)
    assert snapshot.models["ns/m"].warnings == ("symlink 'ns/m/1/up' skipped: loop (points to 'ns/m', a folder it is inside)",)
    assert snapshot.models["ns/m"].versions[1].files == {"weights.txt"}


def test_links_that_point_at_each_other_are_a_loop(tmp_path: Path) -> None:
    root = _repository(tmp_path)
    os.symlink("b", root / "a")
    os.symlink("a", root / "b")
    snapshot = scan(root)
    assert list(snapshot.models) == ["m"]
    assert [w.split(" (")[0] for w in snapshot.warnings] == ["symlink 'a' skipped: loop", "symlink 'b' skipped: loop"]


def test_a_loop_through_hidden_folders_ends(tmp_path: Path) -> None:
    root = _repository(tmp_path)
    (root / ".store" / "a").mkdir(parents=True)
    (root / ".store" / "b").mkdir()
    (root / ".store" / "a" / "weights.txt").write_text("w")
    os.symlink("../b", root / ".store" / "a" / "to-b")
    os.symlink("../a", root / ".store" / "b" / "to-a")
    os.symlink("../.store/a", root / "m" / "2")
    entry = scan(root).models["m"]
    assert entry.versions[2].files == {"weights.txt"}
    assert entry.warnings == ("symlink 'm/2/to-b/to-a' skipped: loop (points to '.store/a', a folder it is inside)",)


def test_a_link_to_a_folder_of_the_repository_is_an_alias(tmp_path: Path) -> None:
    root = _repository(tmp_path)
    os.symlink("m", root / "same-model")
    os.symlink("1", root / "m" / "2")
    snapshot = scan(root)
    assert list(snapshot.models) == ["m"]
    assert list(snapshot.models["m"].versions) == [1]
    assert snapshot.warnings == ("symlink 'same-model' skipped: alias of 'm'",)
    assert snapshot.models["m"].warnings == ("symlink 'm/2' skipped: alias of 'm/1'",)


def test_a_link_into_a_hidden_folder_is_followed(tmp_path: Path) -> None:
    root = _repository(tmp_path)
    store = write_version(root / ".store", 2, "w2")
    os.symlink("../.store/2", root / "m" / "2")
    entry = scan(root).models["m"]
    assert entry.warnings == ()
    assert entry.versions[2].path == root / "m" / "2"
    assert entry.versions[2].real_path == store.resolve()
    assert entry.versions[2].files == {"weights.txt"}


def test_two_links_to_one_hidden_model_give_it_one_id(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    write_model(root, ".models/shared", versions=(1,))
    os.symlink(".models/shared", root / "a")
    os.symlink(".models/shared", root / "b")
    os.symlink(".models", root / "z-namespace")  # reaches the same model as z-namespace/shared
    snapshot = scan(root)
    assert list(snapshot.models) == ["a"]
    assert snapshot.warnings == ("symlink 'b' skipped: alias of 'a'", "folder 'z-namespace/shared' skipped: alias of 'a'")


def test_file_links_count_only_when_they_stay_inside(tmp_path: Path) -> None:
    root = _repository(tmp_path)
    secret = tmp_path / "secret.bin"
    secret.write_text("outside")
    (root / ".blobs").mkdir()
    (root / ".blobs" / "shared.bin").write_text("inside")
    os.symlink(secret, root / "m" / "1" / "stolen.bin")
    os.symlink("../../.blobs/shared.bin", root / "m" / "1" / "shared.bin")
    (root / "m" / "1" / "sub").mkdir()
    os.symlink(tmp_path, root / "m" / "1" / "sub" / "up-and-out")
    entry = scan(root).models["m"]
    assert entry.versions[1].files == {"weights.txt", "shared.bin"}
    assert dict((s[0], s[1]) for s in entry.versions[1].fingerprint)["shared.bin"] == len("inside")
    assert entry.warnings == (
        f"symlink 'm/1/stolen.bin' skipped: points outside the repository (to {secret.resolve()})",
        f"symlink 'm/1/sub/up-and-out' skipped: points outside the repository (to {tmp_path.resolve()})",
    )


def test_a_config_link_outside_is_not_read(tmp_path: Path) -> None:
    root = _repository(tmp_path)
    secret = tmp_path / "config.json"
    secret.write_text('{"task": "embeddings"}')
    os.symlink(secret, root / "m" / "config.json")
    entry = scan(root).models["m"]
    warning = f"symlink 'm/config.json' skipped: points outside the repository (to {secret.resolve()})"
    assert entry.warnings == (warning,)
    assert entry.config_raw == f"<unreadable: {warning}>".encode()  # reported as a broken config.json


def test_the_same_links_give_the_same_warnings_on_every_scan(tmp_path: Path) -> None:
    root = _repository(tmp_path)
    os.symlink("/", root / "rootlink")
    os.symlink(".", root / "self")
    os.symlink("/", root / "m" / "1" / "escape")
    first, second = scan(root), scan(root)
    assert first == second
    assert len(first.warnings) == 2 and len(first.models["m"].warnings) == 1
    assert diff(first, second).changed == set()


def test_explicit_scan_of_a_model_follows_the_same_rules(tmp_path: Path) -> None:
    root = _repository(tmp_path)
    write_model(root, ".hidden/real", versions=(1,))
    os.symlink(".hidden", root / "ns")
    os.symlink("m", root / "alias")
    assert scan_model(root, "ns/real").versions[1].files == {"weights.txt"}
    assert scan_model(root, "alias") is None
    assert scan_model(root, "m/1/../../m") is None


# ---------------------------------------------------------------- holding back what is still being written

def _snapshot_with(tmp_path: Path) -> tuple[Path, Snapshot]:
    root = tmp_path / "repo"
    write_model(root, "m", versions=(1,), config={"task": "embeddings"})
    return root, scan(root)


def test_a_version_being_written_keeps_its_previous_files(tmp_path: Path) -> None:
    root, before = _snapshot_with(tmp_path)
    (root / "m" / "1" / "weights.txt").write_text("half-writ")
    after = scan(root)
    held = hold_unsettled(after, before, frozenset({root / "m" / "1" / "weights.txt"}))
    assert held.models["m"].versions[1] == before.models["m"].versions[1]
    assert hold_unsettled(after, before, frozenset()) is after


def test_a_new_version_being_written_is_left_out(tmp_path: Path) -> None:
    root, before = _snapshot_with(tmp_path)
    write_version(root / "m", 2)
    write_version(root / "m", 3)
    held = hold_unsettled(scan(root), before, frozenset({root / "m" / "2"}))
    assert sorted(held.models["m"].versions) == [1, 3]


def test_a_config_being_written_keeps_its_previous_text(tmp_path: Path) -> None:
    root, before = _snapshot_with(tmp_path)
    (root / "m" / "config.json").write_text('{"task": "emb')
    held = hold_unsettled(scan(root), before, frozenset({root / "m" / "config.json"}))
    assert held.models["m"].config_raw == b'{"task": "embeddings"}'
    assert held.models["m"] == before.models["m"]


def test_a_new_model_still_being_written_is_left_out(tmp_path: Path) -> None:
    root, before = _snapshot_with(tmp_path)
    write_model(root, "config-arriving", config={"task": "embeddings"})
    write_model(root, "files-arriving", versions=(1,))
    write_model(root, "complete", versions=(1,))
    unsettled = frozenset({root / "config-arriving" / "config.json", root / "files-arriving" / "1" / "weights.txt"})
    held = hold_unsettled(scan(root), before, unsettled)
    assert sorted(held.models) == ["complete", "m"]


def test_a_removal_still_under_way_keeps_the_previous_entry(tmp_path: Path) -> None:
    root, before = _snapshot_with(tmp_path)
    write_version(root / "m", 2)
    write_model(root, "gone", versions=(1,))
    before = scan(root)
    shutil.rmtree(root / "m" / "2")
    shutil.rmtree(root / "gone")
    after = scan(root)
    held = hold_unsettled(after, before, frozenset({root / "m" / "2" / "weights.txt", root / "gone" / "1"}))
    assert held.models == before.models
    assert hold_unsettled(after, before, frozenset({root / "unrelated.log"})).models == after.models


def test_writes_outside_version_folders_hold_nothing(tmp_path: Path) -> None:
    root, before = _snapshot_with(tmp_path)
    write_version(root / "m", 2)
    write_model(root, "new", versions=(1,))
    after = scan(root)
    unsettled = frozenset({root / "server.log", root / "m", root / "m" / "notes.txt", root})
    assert hold_unsettled(after, before, unsettled).models == after.models


def test_writes_in_the_real_folder_of_a_linked_version_hold_it(tmp_path: Path) -> None:
    root, before = _snapshot_with(tmp_path)
    write_version(root / ".store", 2)
    os.symlink("../.store/2", root / "m" / "2")
    held = hold_unsettled(scan(root), before, frozenset({(root / ".store" / "2" / "weights.txt").resolve()}))
    assert sorted(held.models["m"].versions) == [1]


def test_version_numbers_past_64_bits_are_ignored_like_other_bad_names(tmp_path: Path) -> None:
    """The status APIs address versions as 64-bit integers: a folder named beyond that would serve
    unversioned requests while no version route could name it."""
    assert parse_version(str(2**63 - 1)) == 2**63 - 1
    assert parse_version(str(2**63)) is None
    assert parse_version("9" * 30) is None
    write_model(tmp_path, "m", versions=(1,))
    (tmp_path / "m" / ("9" * 30)).mkdir()
    snapshot = scan(tmp_path)
    assert sorted(snapshot.models["m"].versions) == [1]
    assert any("9" * 30 in w for w in snapshot.models["m"].warnings)


def test_a_name_that_is_not_utf8_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """An id with a lone surrogate (a Latin-1 folder name from an old archive) cannot be a label or be
    sent by a client: as a Prometheus label it made every /metrics answer fail."""
    write_model(tmp_path, "good", versions=(1,))
    os.mkdir(os.path.join(os.fsencode(tmp_path), b"mod\xe8le"))
    write_version(Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"mod\xe8le"))), 1)
    snapshot = scan(tmp_path)
    assert list(snapshot.models) == ["good"]
    (warning,) = [w for w in snapshot.warnings if "UTF-8" in w]
    warning.encode("utf-8")  # the warning itself is printable


def _failing_scandir(monkeypatch: pytest.MonkeyPatch, failing: Path, error: int) -> None:
    real = os.scandir

    def scandir(path=".", *args):
        if Path(path) == failing:
            raise OSError(error, os.strerror(error), str(path))
        return real(path, *args)

    monkeypatch.setattr(os, "scandir", scandir)


@pytest.mark.parametrize("where", ["model", "namespace", "root", "version", "inside a version"])
def test_a_folder_that_cannot_be_listed_keeps_what_was_there(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                             where: str) -> None:
    """EMFILE, EACCES or an NFS error while listing is not a removal: the previous scan's entries under
    that folder stand (with a warning), and nothing is unloaded."""
    import errno

    from server.repository.scan import hold_unreadable

    write_model(tmp_path, "org/m", versions=(1, 2), config={"task": "embeddings"})
    (tmp_path / "org" / "m" / "2" / "sub").mkdir()
    (tmp_path / "org" / "m" / "2" / "sub" / "weights.bin").write_text("w")
    write_model(tmp_path, "other", versions=(1,))
    before = scan(tmp_path)
    failing = {"model": tmp_path / "org" / "m", "namespace": tmp_path / "org", "root": tmp_path,
               "version": tmp_path / "org" / "m" / "2", "inside a version": tmp_path / "org" / "m" / "2" / "sub"}[where]
    _failing_scandir(monkeypatch, failing, errno.EMFILE)
    snapshot = hold_unreadable(scan(tmp_path), before)
    assert snapshot.models == before.models
    assert diff(before, snapshot).changed == frozenset()
    assert any("could not be listed" in w for w in snapshot.warnings), snapshot.warnings


def test_a_folder_that_vanished_is_still_a_removal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from server.repository.scan import hold_unreadable

    write_model(tmp_path, "m", versions=(1,))
    before = scan(tmp_path)
    _failing_scandir(monkeypatch, tmp_path / "m", errno.ENOENT)
    snapshot = hold_unreadable(scan(tmp_path), before)
    assert "m" not in snapshot.models


def test_a_new_version_that_cannot_be_listed_whole_is_left_out(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno

    from server.repository.scan import hold_unreadable

    write_model(tmp_path, "m", versions=(1,))
    before = scan(tmp_path)
    write_version(tmp_path / "m", 2)
    _failing_scandir(monkeypatch, tmp_path / "m" / "2", errno.EACCES)
    snapshot = hold_unreadable(scan(tmp_path), before)
    assert sorted(snapshot.models["m"].versions) == [1]  # not published with an empty fingerprint
