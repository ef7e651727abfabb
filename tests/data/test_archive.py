from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest

from augkd.data.archive import archive_hash, extract_archive, resolve_root


def _zip_tree(tree: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w", compression=zipfile.ZIP_STORED) as zf:
        for f in sorted(tree.rglob("*")):
            zf.write(f, f.relative_to(tree).as_posix())
    return zip_path


def test_extracts_once_and_reuses(make_tree, tmp_path):
    zip_path = _zip_tree(make_tree(per_class=2), tmp_path / "tiny.zip")
    cache = tmp_path / "cache"
    first = extract_archive(zip_path, cache)
    assert first.parent == cache / "archives" and first.name.startswith("tiny-")
    assert sorted(p.name for p in (first / "train").iterdir()) == ["cat", "dog", "ship"]
    marker = first / "marker"
    marker.write_text("kept")  # a second call must reuse the folder, not extract again
    assert extract_archive(zip_path, cache) == first and marker.exists()
    assert not [p for p in (cache / "archives").iterdir() if p.name.startswith(".tiny")]  # no temp folder left


def test_same_content_same_folder_changed_content_new_folder(make_tree, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    zip_a = _zip_tree(make_tree(per_class=2), tmp_path / "a" / "set.zip")
    zip_b = tmp_path / "b" / "set.zip"
    shutil.copy(zip_a, zip_b)
    assert archive_hash(zip_a) == archive_hash(zip_b)
    cache = tmp_path / "cache"
    assert extract_archive(zip_a, cache) == extract_archive(zip_b, cache)
    with zipfile.ZipFile(zip_b, "a") as zf:
        zf.writestr("train/cat/extra.jpg", b"not really")
    assert extract_archive(zip_b, cache) != extract_archive(zip_a, cache)


def test_errors_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.zip"):
        resolve_root(tmp_path / "missing.zip", tmp_path)
    with pytest.raises(FileNotFoundError, match="dataset folder not found: .*nowhere"):
        resolve_root(tmp_path / "nowhere", tmp_path)
    fake = tmp_path / "fake.zip"
    fake.write_bytes(b"plain text")
    with pytest.raises(ValueError, match="not a zip archive: .*fake.zip"):
        resolve_root(fake, tmp_path)
    assert resolve_root(tmp_path, tmp_path) == tmp_path
