"""augkd.data.cache: a decoded-data cache entry is read back only under its seal and with sane values; every
damage is one line naming the file (never wrong labels or pixels, never a traceback)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from augkd.cli import main
from augkd.data.cache import DataCacheError, load_tensors, save_tensors
from augkd.data.memory import load_folder_split


@pytest.fixture
def entry(make_tree, tmp_path):
    """A decoded 3-class tree of 4 real JPEGs per class and its cache entry (path without suffix)."""
    root = make_tree(("train",), per_class=4)
    ds = load_folder_split(root, "train", 32, 1.0, tmp_path / "cache", quiet=True)
    assert not ds.cache_hit
    return root, tmp_path / "cache", ds


def _reload(root, cache):
    return load_folder_split(root, "train", 32, 1.0, cache, quiet=True)


def _labels_offset(pt, labels: torch.Tensor) -> int:
    data = pt.read_bytes()
    offset = data.find(labels.numpy().tobytes())
    assert offset > 0
    return offset


def test_an_intact_entry_is_a_hit_with_the_same_tensors(entry):
    root, cache, ds = entry
    again = _reload(root, cache)
    assert again.cache_hit and torch.equal(again.images, ds.images) and torch.equal(again.labels, ds.labels)
    meta = json.loads(Path(ds.cache_path).with_suffix(".json").read_text())
    assert meta["seal"]["bytes"] > ds.images.numel() and len(meta["seal"]["sha256"]) == 64


def test_a_changed_label_byte_is_refused_naming_the_file(entry, capsys):
    root, cache, ds = entry
    pt = Path(ds.cache_path)
    data = bytearray(pt.read_bytes())
    data[_labels_offset(pt, ds.labels) + 8 * 5] ^= 1  # label of sample 5: 0 -> 1, a valid class
    pt.write_bytes(bytes(data))
    with pytest.raises(DataCacheError, match=rf"{pt}: contents differ from their seal .*; delete .* to decode again"):
        _reload(root, cache)
    # The command line: one line, exit 2.
    args = ["--prepare", "-q", f"data.root={root}", f"data.cache_dir={cache}", "data.test_split=train"]
    assert main(["data", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and str(pt) in err and "contents differ from their seal" in err


def test_truncated_swapped_and_damaged_metadata_are_refused(entry, make_tree, tmp_path):
    root, cache, ds = entry
    pt = Path(ds.cache_path)
    js = pt.with_suffix(".json")
    good_pt, good_js = pt.read_bytes(), js.read_text()
    pt.write_bytes(good_pt[:-100])
    with pytest.raises(DataCacheError, match=f"{pt}: .* bytes, sealed with .*truncated"):
        _reload(root, cache)
    # A .pt of another entry (other decode size) copied into place: sealed for another entry.
    other = load_folder_split(root, "train", 24, 1.0, cache, quiet=True)
    shutil.copy(other.cache_path, pt)
    shutil.copy(Path(other.cache_path).with_suffix(".json"), js)
    with pytest.raises(DataCacheError, match=f"{pt}: built with other settings"):
        _reload(root, cache)
    pt.write_bytes(good_pt)
    for text, message in (("{not json", "unreadable decoded-data cache metadata"), ("[]", "no seal")):
        js.write_text(text)
        with pytest.raises(DataCacheError, match=f"{js}: .*{message}"):
            _reload(root, cache)
    js.write_text(good_js)
    assert _reload(root, cache).cache_hit
    js.unlink()  # an entry without its JSON is no entry (a killed writer): decoded again, silently
    assert not _reload(root, cache).cache_hit


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda t, m: t["labels"].__setitem__(0, 3), r"labels in \[0, 3\], outside \[0, 3\)"),
        (lambda t, m: t["labels"].__setitem__(0, -1), r"labels in \[-1, 2\], outside"),
        (lambda t, m: t["sample_ids"].__setitem__(1, 0), r"sample ids that are not ascending in \[0, 12\)"),
        (lambda t, m: t["sample_ids"].__setitem__(11, 12), "sample ids that are not ascending"),
        (lambda t, m: t.__setitem__("images", t["images"][:, :, :16]), r"\(16, 32\) images, not 32x32"),
        (lambda t, m: t.__setitem__("labels", t["labels"][:-1]), r"12 images but \(11,\) labels"),
        (lambda t, m: t.__setitem__("labels", t["labels"].float()), "not integers"),
        (lambda t, m: t.pop("sample_ids"), "lacks sample_ids"),
        (lambda t, m: m.pop("classes"), "lacks classes"),
    ],
)
def test_impossible_values_under_a_valid_seal_are_refused(entry, change, message):
    """A faulty writer that sealed wrong values: the ranges are checked on load, and the file is named."""
    root, cache, ds = entry
    path = Path(ds.cache_path).with_suffix("")
    tensors, meta = load_tensors(path)
    meta.pop("seal")
    change(tensors, meta)
    save_tensors(path, tensors, meta)
    with pytest.raises(DataCacheError, match=f"{path}.pt: decoded-data cache entry .*{message}"):
        _reload(root, cache)
