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
