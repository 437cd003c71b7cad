"""The loader refuses version folders whose files resolve outside the repository (OpenVINO opens files
by name, so leaving them out of the scan's fingerprint alone would not keep them unread)."""

from __future__ import annotations

import os
from pathlib import Path

from server.pipelines.loader import links_outside


def test_links_outside_the_root_are_found_at_any_depth(tmp_path: Path) -> None:
    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    version = root / "m" / "1"
    (version / "sub").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "weights.bin").write_bytes(b"w")
    (root / ".store").mkdir()
    (root / ".store" / "tokenizer.bin").write_bytes(b"t")
    (version / "plain.xml").write_text("x")
    os.symlink(elsewhere / "weights.bin", version / "openvino_model.bin")
    os.symlink(elsewhere, version / "sub" / "folder-link")
    os.symlink(root / ".store" / "tokenizer.bin", version / "openvino_tokenizer.bin")  # inside: fine
    os.symlink("../../../elsewhere/weights.bin", version / "relative.bin")
    assert links_outside(version, root) == ["openvino_model.bin", "relative.bin", "sub/folder-link"]


def test_a_clean_folder_has_none(tmp_path: Path) -> None:
    (tmp_path / "1").mkdir()
    (tmp_path / "1" / "openvino_model.xml").write_text("x")
    assert links_outside(tmp_path / "1", tmp_path) == []


def test_the_task_is_never_inferred_through_a_link_out_of_the_repository(tmp_path: Path) -> None:
    from server.pipelines.loader import OpenVINOLoader

    root, elsewhere = tmp_path / "repo", tmp_path / "elsewhere"
    (root / "m" / "1").mkdir(parents=True)
    elsewhere.mkdir()
    (elsewhere / "openvino_model.xml").write_text("<net/>")
    os.symlink(elsewhere / "openvino_model.xml", root / "m" / "1" / "openvino_model.xml")
    os.symlink(elsewhere, root / "m" / "2")
    loader = OpenVINOLoader(root=root)
    assert links_outside(root / "m" / "2", root) == ["."]
    assert loader.infer_task(root / "m" / "1") is None
    assert loader.infer_task(root / "m" / "2") is None
    (root / "m" / "1" / ".hidden-link").symlink_to(elsewhere)  # hidden names are never read: not refused
    (root / "m" / "1" / "openvino_model.xml").unlink()
    assert links_outside(root / "m" / "1", root) == []
