from pathlib import Path

from server.repository.scan import diff, parse_version, scan, scan_model
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
