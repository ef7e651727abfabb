"""augkd.digest: a seal catches every change of the sealed bytes, their size, their key and their identity."""

from __future__ import annotations

import pytest

from augkd.digest import (
    TRAILER_BYTES,
    SealError,
    check_seal,
    encode_trailer,
    key_digest,
    make_seal,
    read_trailer,
)

KEY = {"seed": 0, "policy": "ra-n2-m9"}


@pytest.fixture
def sealed(tmp_path):
    data = bytes(range(256)) * 40
    path = tmp_path / "f.bin"
    path.write_bytes(data + encode_trailer(make_seal(data, KEY, epoch=3)))
    return path


def test_an_intact_file_passes_and_the_key_ignores_entry_order(sealed):
    assert key_digest({"b": 1, "a": 2}) == key_digest({"a": 2, "b": 1}) != key_digest({"a": 2, "b": 2})
    seal = read_trailer(sealed)
    assert seal["bytes"] == sealed.stat().st_size - TRAILER_BYTES
    check_seal(sealed, seal, dict(reversed(KEY.items())), epoch=3)


@pytest.mark.parametrize("offset", [0, 5000, 10239])
def test_a_flipped_byte_anywhere_in_the_contents_is_found(sealed, offset):
    data = bytearray(sealed.read_bytes())
    data[offset] ^= 1
    sealed.write_bytes(bytes(data))
    seal = read_trailer(sealed)
    check_seal(sealed, seal, KEY, contents=False, epoch=3)  # size and seal still fit: only the hash tells
    with pytest.raises(SealError, match=r"f.bin: contents differ from their seal \(sha256 mismatch"):
        check_seal(sealed, seal, KEY, epoch=3)


def test_truncation_other_key_other_identity_and_missing_file(sealed, tmp_path):
    seal = read_trailer(sealed)
    with pytest.raises(SealError, match="f.bin: sealed as epoch 3, expected epoch 4"):
        check_seal(sealed, seal, KEY, epoch=4)
    with pytest.raises(SealError, match="f.bin: built with other settings"):
        check_seal(sealed, seal, {**KEY, "seed": 1}, epoch=3)
    data = sealed.read_bytes()
    sealed.write_bytes(data[:-1])
    with pytest.raises(SealError, match="no seal at the end"):
        read_trailer(sealed)
    with pytest.raises(SealError, match="truncated or overwritten"):
        check_seal(sealed, seal, KEY, epoch=3)
    sealed.write_bytes(data[:100])
    with pytest.raises(SealError, match="100 bytes, too short to hold its seal"):
        read_trailer(sealed)
    sealed.unlink()
    with pytest.raises(SealError, match="f.bin: missing"):
        read_trailer(sealed)
    with pytest.raises(SealError, match="f.bin: missing"):
        check_seal(sealed, seal, KEY, epoch=3)


def test_a_seal_kept_beside_the_file_checks_a_file_without_trailer(tmp_path):
    path = tmp_path / "t.pt"
    path.write_bytes(b"x" * 1000)
    seal = make_seal(path.read_bytes(), {})
    check_seal(path, seal, {})
    path.write_bytes(b"x" * 999 + b"y")
    with pytest.raises(SealError, match="t.pt: contents differ"):
        check_seal(path, seal, {})


def test_a_damaged_trailer_is_named(sealed):
    data = bytearray(sealed.read_bytes())
    data[-TRAILER_BYTES + 20] = ord("{")
    sealed.write_bytes(bytes(data))
    with pytest.raises(SealError, match="f.bin: damaged seal at the end of the file"):
        read_trailer(sealed)
