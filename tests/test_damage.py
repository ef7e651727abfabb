"""Family 5 of the robustness issue: every failure a user's files can cause ends in one line, never a traceback.

A property test walks three families of damage with hypothesis and runs ``augkd data --prepare`` (which scans,
unzips, decodes and caches, like every command that reads images) on the result:

- the image tree: link loops, dangling links, a folder named like an image, zero-byte, truncated and random-byte
  images, animated GIFs, a class folder that is a link loop;
- the zip archive of a clean tree: flipped bytes, a truncation, a chunk of random bytes (stored or deflated);
- the decoded-data cache of a clean tree: a flipped, truncated, emptied, replaced or deleted ``.pt``/``.json``.

Each run must exit 0, or 2 with one ``augkd data: error:`` line, and leave no temporary folder in the cache. The
next member of a family is a new entry in one of the lists below. ``AUGKD_FUZZ_EXAMPLES=500`` walks deeper.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from augkd.cli import main
from augkd.data.archive import extract_archive

EXAMPLES = int(os.environ.get("AUGKD_FUZZ_EXAMPLES", "0"))
WALK = settings(
    max_examples=EXAMPLES or 30,
    deadline=None,
    derandomize=not EXAMPLES,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)

TREE_FAULTS = (
    "link_loop",
    "dangling_link",
    "folder_named_like_an_image",
    "zero_byte",
    "truncated",
    "random_bytes",
    "animated_gif",
    "class_folder_link_loop",
)
ARCHIVE_FAULTS = ("flip", "truncate", "random_chunk")
CACHE_FAULTS = ("flip", "truncate", "empty", "random_bytes", "delete")


def _tree(root: Path, jpegs: dict[str, list[bytes]]) -> Path:
    for split in ("train", "val"):
        for cls, images in jpegs.items():
            (root / split / cls).mkdir(parents=True)
            for i, data in enumerate(images[:4]):
                (root / split / cls / f"{i:04d}.jpg").write_bytes(data)
    return root


def _apply_tree_fault(root: Path, fault: str, split: str, cls: str, rng: np.random.Generator) -> None:
    with contextlib.suppress(FileExistsError):  # the same fault twice in one folder
        _apply(root, fault, split, cls, rng)


def _apply(root: Path, fault: str, split: str, cls: str, rng: np.random.Generator) -> None:
    folder = root / split / cls
    victim = folder / "0001.jpg"
    if fault == "link_loop":
        os.symlink("loop-b.jpg", folder / "loop-a.jpg")
        os.symlink("loop-a.jpg", folder / "loop-b.jpg")
    elif fault == "dangling_link":
        os.symlink("nowhere.jpg", folder / "dangling.jpg")
    elif fault == "folder_named_like_an_image":
        (folder / "folder.png").mkdir()
    elif fault == "zero_byte" and victim.is_file():
        victim.write_bytes(b"")
    elif fault == "truncated" and victim.is_file():
        victim.write_bytes(victim.read_bytes()[: int(rng.integers(1, 300))])
    elif fault == "random_bytes":
        (folder / "noise.png").write_bytes(rng.bytes(int(rng.integers(1, 2000))))
    elif fault == "animated_gif":
        frames = [Image.fromarray(rng.integers(0, 255, (40, 30, 3), dtype=np.uint8)) for _ in range(3)]
        frames[0].save(folder / "anim.gif", save_all=True, append_images=frames[1:], loop=0)
    elif fault == "class_folder_link_loop":
        os.symlink("zz-loop", root / split / "zz-loop")


def _zip(tree: Path, path: Path, method: int = zipfile.ZIP_STORED) -> Path:
    """``tree`` as a zip archive at ``path`` (members relative to ``tree``)."""
    with zipfile.ZipFile(path, "w", compression=method) as zf:
        for f in sorted(tree.rglob("*")):
            zf.write(f, f.relative_to(tree).as_posix())
    return path


def _damage_bytes(data: bytes, fault: str, rng: np.random.Generator) -> bytes:
    buf = bytearray(data)
    if not buf:
        return bytes(buf)
    if fault == "flip":
        for pos in rng.integers(0, len(buf), int(rng.integers(1, 9))):
            buf[pos] ^= 1 << int(rng.integers(0, 8))
    elif fault == "truncate":
        del buf[int(rng.integers(0, len(buf))) :]
    elif fault == "random_chunk":
        start = int(rng.integers(0, len(buf)))
        buf[start : start + 64] = rng.bytes(min(64, len(buf) - start))
    elif fault == "empty":
        return b""
    elif fault == "random_bytes":
        return rng.bytes(len(buf))
    return bytes(buf)


def _prepare(root: Path, cache: Path, bad_files: str) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        rc = main(
            [
                "data",
                "--prepare",
                "--quiet",
                f"data.root={root}",
                f"data.cache_dir={cache}",
                "data.image_size=32",
                "data.test_split=val",
                f"data.bad_files={bad_files}",
            ]
        )
    return rc, err.getvalue()


def _assert_one_line(rc: int, stderr: str, what: str) -> None:
    assert "Traceback" not in stderr, f"{what}: {stderr}"
    assert rc in (0, 2), f"{what}: exit {rc}: {stderr}"
    if rc == 2:
        lines = [line for line in stderr.splitlines() if line.strip()]
        assert lines and lines[-1].startswith("augkd data: error: "), f"{what}: {stderr}"
        assert len(lines[-1]) < 400, f"{what}: {stderr}"


def _no_temporaries(cache: Path, what: str) -> None:
    left = [p for p in cache.rglob("*") if p.name.startswith(".") and not p.name.startswith(".hash-")]
    left += [p for p in cache.rglob("*.tmp")]
    assert not left, f"{what}: temporaries left: {left}"


class _Jpegs(dict):
    def __repr__(self) -> str:  # hypothesis prints the test's arguments on a failure
        return f"<{sum(map(len, self.values()))} real CIFAR-10 JPEGs>"


@pytest.fixture
def jpegs(real_jpegs) -> _Jpegs:
    return _Jpegs(real_jpegs)


@WALK
@given(data=st.data())
def test_damaged_trees_archives_and_caches_end_in_one_line(jpegs, data) -> None:
    real_jpegs = jpegs
    family = data.draw(st.sampled_from(["tree", "archive", "cache"]), label="family")
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1), label="seed"))
    bad_files = data.draw(st.sampled_from(["error", "skip"]), label="bad_files")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        root, cache = _tree(tmp / "set", real_jpegs), tmp / "cache"
        if family == "tree":
            faults = data.draw(st.lists(st.sampled_from(TREE_FAULTS), min_size=1, max_size=3), label="faults")
            for fault in faults:
                split = data.draw(st.sampled_from(["train", "val"]), label="split")
                cls = data.draw(st.sampled_from(sorted(real_jpegs)), label="class")
                _apply_tree_fault(root, fault, split, cls, rng)
            what = f"tree {faults}"
        elif family == "archive":
            fault = data.draw(st.sampled_from(ARCHIVE_FAULTS), label="fault")
            method = data.draw(st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED]), label="method")
            zipped = _zip(root, tmp / "set.zip", method)
            zipped.write_bytes(_damage_bytes(zipped.read_bytes(), fault, rng))
            root, what = zipped, f"archive {fault}"
        else:
            rc, stderr = _prepare(root, cache, bad_files)
            assert rc == 0, stderr
            files = sorted(p for p in (cache / "decoded").iterdir() if p.suffix in (".pt", ".json"))
            victim = files[int(rng.integers(0, len(files)))]
            fault = data.draw(st.sampled_from(CACHE_FAULTS), label="fault")
            if fault == "delete":
                victim.unlink()
            else:
                victim.write_bytes(_damage_bytes(victim.read_bytes(), fault, rng))
            what = f"cache {victim.name} {fault}"
        rc, stderr = _prepare(root, cache, bad_files)
        _assert_one_line(rc, stderr, what)
        if cache.exists():
            _no_temporaries(cache, what)


def test_sigterm_while_unzipping_removes_the_temporary_folder(tmp_path, make_tree) -> None:
    """SIGTERM mid-extraction: exit status 143 and no half-extracted folder left behind."""
    tree = make_tree(per_class=4)
    zipped = _zip(tree, tmp_path / "set.zip")
    cache = tmp_path / "cache"
    script = (
        "import os, signal, sys, zipfile\n"
        "from augkd.data.archive import extract_archive\n"
        "real = zipfile.ZipFile.extract\n"
        "def extract(self, member, path=None, pwd=None):\n"
        "    out = real(self, member, path, pwd)\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    return out\n"
        "zipfile.ZipFile.extract = extract\n"
        "zipfile.ZipFile.extractall = lambda self, path=None, members=None, pwd=None: "
        "[self.extract(m, path, pwd) for m in self.namelist()]\n"
        f"extract_archive({str(zipped)!r}, {str(cache)!r})\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 143, proc.stderr
    assert "Traceback" not in proc.stderr
    archives = cache / "archives"
    assert [p.name for p in archives.iterdir() if p.is_dir()] == []  # neither a temp folder nor a finished one


def test_a_folder_left_by_a_killed_extraction_is_removed_by_the_next(tmp_path, make_tree) -> None:
    tree = make_tree(per_class=2)
    zipped = _zip(tree, tmp_path / "set.zip")
    cache = tmp_path / "cache"
    target = extract_archive(zipped, cache)
    shutil.rmtree(target)
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    orphan = target.parent / f".{target.name}.{int(dead.stdout)}@{socket.gethostname()}-abc123"
    (orphan / "train").mkdir(parents=True)
    alive = target.parent / f".{target.name}.{os.getpid()}@{socket.gethostname()}-def456"  # a live extraction
    alive.mkdir()
    assert extract_archive(zipped, cache) == target
    assert not orphan.exists() and alive.exists()


@pytest.mark.parametrize("command", ["report", "ambiguity", "gallery"])
def test_an_out_that_is_a_file_is_one_line_before_any_work(tmp_path, capsys, command) -> None:
    out = tmp_path / "afile"
    out.write_text("mine")
    argv = {
        "report": ["report", str(tmp_path / "no-run"), "--out", str(out)],
        "ambiguity": ["ambiguity", "--teacher", str(tmp_path / "t.pt"), "--out", str(out)],
        "gallery": ["gallery", "--out", str(out / "x.png")],
    }[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"augkd {command}: error: ") and "afile" in err[0], err
    assert out.read_text() == "mine"


def test_a_read_only_out_is_one_line(tmp_path, capsys, monkeypatch) -> None:
    """Read-only folders cannot be made for root (the tests' user), so the refusal is injected at mkdir."""

    def refuse(self, *args, **kwargs):
        raise PermissionError(13, "Read-only file system", str(self))

    monkeypatch.setattr(Path, "mkdir", refuse)
    assert main(["ambiguity", "--teacher", str(tmp_path / "t.pt"), "--out", str(tmp_path / "new")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [
        f"augkd ambiguity: error: cannot write {tmp_path / 'new'}: Read-only file system "
        "(any previous version of it is left intact)"
    ], err
