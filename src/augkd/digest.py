"""Seals: a digest written when a cache file is finished, checked when it is opened, so a cache cannot lie.

Both of augkd's caches use this one mechanism:

- the teacher cache (:mod:`augkd.distill.cache`): every ``epoch_NNNN.bin`` ends in a fixed-size *trailer* holding
  its seal, so the file carries what it was built for;
- the decoded-data cache (:mod:`augkd.data.cache`): the ``.json`` beside each ``.pt`` holds the seal of the
  ``.pt``.

A seal is plain data::

    {"format": "augkd-seal/1", "sha256": <hex of the sealed bytes>, "bytes": <their count>,
     "key": <hex SHA-256 of what the bytes were built from>, ...identity such as {"epoch": 7}}

:func:`check_seal` compares the size, the key and the identity with what the reader expects (cheap: no bytes are
read), and, with ``contents=True``, the SHA-256 of the bytes. Every mismatch is a :class:`SealError` whose one
line names the file and what differs: a flipped byte, a truncated file, a file built for another key, a file of
another epoch renamed into place.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "SEAL_FORMAT",
    "TRAILER_BYTES",
    "SealError",
    "check_seal",
    "decode_trailer",
    "encode_trailer",
    "key_digest",
    "make_seal",
    "read_trailer",
    "seal_file",
    "sha256_file",
]

SEAL_FORMAT = "augkd-seal/1"
#: Size of a file trailer: a magic line, the seal as JSON, space padding, a newline.
TRAILER_BYTES = 256
_MAGIC = b"AUGKD-SEAL\n"
_CHUNK = 1 << 20


class SealError(ValueError):
    """A cache file whose bytes, size, key or identity differ from its seal or from what the reader expects."""


def key_digest(key: Mapping[str, Any]) -> str:
    """Hex SHA-256 of a key (any JSON-able mapping), independent of the order of its entries."""
    return hashlib.sha256(json.dumps(key, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def sha256_file(path: str | Path, length: int | None = None) -> str:
    """Hex SHA-256 of the first ``length`` bytes of a file (all of it when None)."""
    h = hashlib.sha256()
    left = length
    with open(path, "rb", buffering=0) as f:
        while left is None or left > 0:
            chunk = f.read(_CHUNK if left is None else min(_CHUNK, left))
            if not chunk:
                break
            h.update(chunk)
            if left is not None:
                left -= len(chunk)
    return h.hexdigest()


def make_seal(data: bytes | memoryview, key: Mapping[str, Any], **identity: Any) -> dict[str, Any]:
    """The seal of ``data`` built from ``key`` (``identity``: further entries the reader checks, e.g. ``epoch``)."""
    return {
        "format": SEAL_FORMAT,
        "sha256": hashlib.sha256(data).hexdigest(),
        "bytes": len(data),
        "key": key_digest(key),
        **identity,
    }


def seal_file(path: str | Path, key: Mapping[str, Any], **identity: Any) -> dict[str, Any]:
    """The seal of a whole file already on disk (for a seal kept beside it, e.g. in a metadata file)."""
    return {
        "format": SEAL_FORMAT,
        "sha256": sha256_file(path),
        "bytes": os.stat(path).st_size,
        "key": key_digest(key),
        **identity,
    }


def encode_trailer(seal: Mapping[str, Any]) -> bytes:
    """The fixed-size trailer holding ``seal`` (appended to the sealed bytes)."""
    body = json.dumps(dict(seal), sort_keys=True, separators=(",", ":")).encode()
    room = TRAILER_BYTES - len(_MAGIC) - 1
    if len(body) > room:
        raise ValueError(f"seal too long for a {TRAILER_BYTES}-byte trailer ({len(body)} > {room} bytes)")
    return _MAGIC + body.ljust(room) + b"\n"


def decode_trailer(trailer: bytes, path: str | Path) -> dict[str, Any]:
    """The seal in a trailer read from ``path``.

    Raises:
        SealError: no trailer there, or a damaged one.
    """
    if len(trailer) != TRAILER_BYTES or not trailer.startswith(_MAGIC):
        raise SealError(f"{path}: no seal at the end of the file (truncated, or not written by this augkd)")
    try:
        seal = json.loads(trailer[len(_MAGIC) :].decode())
    except ValueError:
        raise SealError(f"{path}: damaged seal at the end of the file") from None
    if not isinstance(seal, dict) or seal.get("format") != SEAL_FORMAT:
        raise SealError(f"{path}: damaged seal at the end of the file")
    return seal


def read_trailer(path: str | Path) -> dict[str, Any]:
    """The seal of a file that ends in a trailer (its sealed bytes are all the bytes before it).

    Raises:
        SealError: the file is missing, shorter than a trailer, or ends in something else.
    """
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if size < TRAILER_BYTES:
                raise SealError(f"{path}: {size} bytes, too short to hold its seal (truncated)")
            f.seek(size - TRAILER_BYTES)
            trailer = f.read(TRAILER_BYTES)
    except FileNotFoundError:
        raise SealError(f"{path}: missing") from None
    except OSError as exc:
        raise SealError(f"{path}: unreadable ({exc.strerror or exc})") from None
    seal = decode_trailer(trailer, path)
    if seal.get("bytes") != size - TRAILER_BYTES:
        raise SealError(f"{path}: {size - TRAILER_BYTES} bytes before its seal, sealed with {seal.get('bytes')}")
    return seal


def check_seal(
    path: str | Path,
    seal: Mapping[str, Any],
    key: Mapping[str, Any],
    *,
    contents: bool = True,
    **identity: Any,
) -> None:
    """Check that ``path`` holds what ``seal`` says and that the seal is the one the reader expects.

    Args:
        path: the sealed file (with a trailer, the bytes before it are checked).
        seal: its seal (:func:`read_trailer` or the entry of a metadata file).
        key: what the reader expects the bytes to be built from (compared by :func:`key_digest`).
        contents: also hash the bytes (otherwise only the size, key and identity are compared).
        identity: entries the seal must hold with these values (e.g. ``epoch=7``).

    Raises:
        SealError: one line naming the file and the first difference.
    """
    for name, want in identity.items():
        if seal.get(name) != want:
            raise SealError(f"{path}: sealed as {name} {seal.get(name)!r}, expected {name} {want!r} (file renamed?)")
    if seal.get("key") != key_digest(key):
        raise SealError(f"{path}: built with other settings than this cache's (seal key differs)")
    try:
        size = os.stat(path).st_size
    except FileNotFoundError:
        raise SealError(f"{path}: missing") from None
    sealed = seal.get("bytes")
    has_trailer = isinstance(sealed, int) and size == sealed + TRAILER_BYTES
    if not isinstance(sealed, int) or size not in (sealed, sealed + TRAILER_BYTES):
        raise SealError(f"{path}: {size} bytes, sealed with {sealed} (truncated or overwritten)")
    if contents:
        try:
            got = sha256_file(path, sealed if has_trailer else None)
        except OSError as exc:
            raise SealError(f"{path}: unreadable ({exc.strerror or exc})") from None
        if got != seal.get("sha256"):
            raise SealError(f"{path}: contents differ from their seal (sha256 mismatch: damaged on disk)")
