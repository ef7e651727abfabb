"""Zip archives of ImageFolder trees, unzipped once into the cache.

A ``.zip`` root is extracted to ``<cache_dir>/archives/<stem>-<hash>``, where the hash covers the archive's
central directory (member names, sizes and CRC-32s): the same archive copied elsewhere reuses the extraction,
a changed one gets a fresh folder. Extraction goes to a temporary folder that is renamed into place when
complete, so a killed run or a concurrent one never sees a half-extracted tree. SIGTERM during extraction removes
the temporary folder before the process ends; one left by a SIGKILL (its process gone) is removed by the next
extraction of that archive. A damaged archive (bad CRC, truncated member) is one line naming it.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import zipfile
import zlib
from pathlib import Path

from augkd.io import terminate_cleanly

#: What zipfile raises for a damaged archive: bad CRCs and headers, short reads, broken deflate streams, member
#: names that do not decode, a header that claims an unknown compression or encryption.
_DAMAGED = (zipfile.BadZipFile, EOFError, zlib.error, NotImplementedError, UnicodeDecodeError, RuntimeError)

__all__ = ["archive_hash", "extract_archive", "resolve_root"]


def archive_hash(zip_path: str | Path, length: int = 12) -> str:
    """Short content hash of a zip archive from its member names, sizes and CRC-32s (no member data is read).

    Raises:
        ValueError: a damaged archive (unreadable central directory).
    """
    h = hashlib.sha256()
    try:
        with zipfile.ZipFile(zip_path) as zf:
            for info in sorted(zf.infolist(), key=lambda i: i.filename):
                h.update(f"{info.filename}\0{info.file_size}\0{info.CRC}\n".encode())
    except _DAMAGED as exc:
        raise _damaged(zip_path, exc) from None
    return h.hexdigest()[:length]


def _damaged(zip_path: Path | str, exc: BaseException) -> ValueError:
    reason = str(exc).splitlines()[0] if str(exc).strip() else type(exc).__name__
    if len(reason) > 160:  # zipfile quotes whole damaged headers
        reason = reason[:157] + "..."
    return ValueError(f"damaged zip archive {zip_path}: {reason}")


def _owner_alive(tmp: Path, stem: str) -> bool:
    """Whether the process that named the temporary folder ``tmp`` (``.<stem>.<pid>@<host>-<random>``) still runs;
    a folder of another host, or of an unknown form, counts as alive (it is never touched)."""
    owner = tmp.name[len(stem) + 2 :].rsplit("-", 1)[0]
    pid, _, host = owner.partition("@")
    if host != socket.gethostname() or not pid.isdigit():
        return True
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True


def _remove_orphans(archives: Path, stem: str) -> None:
    for tmp in archives.glob(f".{stem}.*"):
        if tmp.is_dir() and not _owner_alive(tmp, stem):
            shutil.rmtree(tmp, ignore_errors=True)


def _memo_hash(zip_path: Path, archives: Path) -> str:
    """:func:`archive_hash`, remembered per (absolute path, size, mtime): reading a 60k-member directory takes ~1 s."""
    st = zip_path.stat()
    stamp = f"{zip_path.resolve()}\0{st.st_size}\0{st.st_mtime_ns}"
    memo = archives / f".hash-{hashlib.sha256(stamp.encode()).hexdigest()[:16]}"
    try:
        return memo.read_text().strip()
    except OSError:
        pass
    value = archive_hash(zip_path)
    try:
        archives.mkdir(parents=True, exist_ok=True)
        tmp = memo.with_name(f"{memo.name}.{os.getpid()}")
        tmp.write_text(value)
        os.replace(tmp, memo)
    except OSError:  # a read-only cache still works, just slower
        pass
    return value


def extract_archive(zip_path: str | Path, cache_dir: str | Path) -> Path:
    """Extract ``zip_path`` once into ``<cache_dir>/archives/<stem>-<hash>`` and return that folder.

    Args:
        zip_path: a zip archive.
        cache_dir: the cache root; created if missing.

    Raises:
        FileNotFoundError: the archive does not exist.
        ValueError: the file is not a zip archive, or a damaged one.
    """
    zip_path = Path(zip_path)
    if not zip_path.is_file():
        raise FileNotFoundError(f"dataset archive not found: {zip_path}")
    if not zipfile.is_zipfile(zip_path):
        raise ValueError(f"not a zip archive: {zip_path}")
    archives = Path(cache_dir) / "archives"
    target = archives / f"{zip_path.stem}-{_memo_hash(zip_path, archives)}"
    if target.is_dir():
        return target
    archives.mkdir(parents=True, exist_ok=True)
    _remove_orphans(archives, target.name)
    with terminate_cleanly():
        _extract(zip_path, archives, target)
    return target


def _extract(zip_path: Path, archives: Path, target: Path) -> None:
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.{os.getpid()}@{socket.gethostname()}-", dir=archives))
    try:
        try:
            with zipfile.ZipFile(zip_path) as zf:
                zf.extractall(tmp)  # zipfile drops absolute paths and '..' components
        except _DAMAGED as exc:
            raise _damaged(zip_path, exc) from None
        try:
            os.rename(tmp, target)
        except OSError:
            if not target.is_dir():  # a concurrent extraction winning the race is fine; anything else is not
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def resolve_root(root: str | Path, cache_dir: str | Path) -> Path:
    """The dataset folder for ``root``: the folder itself, or the extraction of a ``.zip`` archive.

    Raises:
        FileNotFoundError: ``root`` does not exist (the message names the expected path).
    """
    root = Path(root)
    if root.suffix.lower() == ".zip":
        return extract_archive(root, cache_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"dataset folder not found: {root.resolve()}")
    return root
