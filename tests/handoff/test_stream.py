"""The streaming AEAD layer: round trips at every boundary, and every STREAM attack fails."""

from __future__ import annotations

import io
import os

import pytest

from secure_data.handoff import stream

CHUNK = stream.MIN_CHUNK_SIZE  # small segments so a few KB exercise many of them
KEY = os.urandom(32)
AD = b"package=p1;path=a.jpg"


def _encrypt(data: bytes, key: bytes = KEY, ad: bytes = AD) -> tuple[bytes, stream.StreamResult]:
    out = io.BytesIO()
    result = stream.encrypt_bytes(key, ad, data, out, chunk_size=CHUNK)
    return out.getvalue(), result


def _decrypt(blob: bytes, key: bytes = KEY, ad: bytes = AD) -> bytes:
    """Decrypt through both the reader API and the in-memory API; they must agree on every input."""
    outputs, errors = [], []
    for run in (lambda write: stream.decrypt_file(key, ad, io.BytesIO(blob), write),
                lambda write: stream.decrypt_bytes(key, ad, blob, write)):
        out = io.BytesIO()
        try:
            run(out.write)
            outputs.append(out.getvalue())
        except stream.StreamError as exc:
            errors.append(exc)
    assert len(errors) in (0, 2), f"decrypt_file and decrypt_bytes disagree: {errors}"
    if errors:
        assert str(errors[0]) == str(errors[1])
        raise errors[0]
    assert outputs[0] == outputs[1]
    return outputs[0]


@pytest.mark.parametrize("size", [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 3 * CHUNK, 3 * CHUNK + 17])
def test_round_trip_and_exact_sizes(size):
    data = os.urandom(size)
    blob, result = _encrypt(data)
    assert len(blob) == stream.ciphertext_size(size, CHUNK) == result.ciphertext_size
    assert result.plaintext_size == size
    assert _decrypt(blob) == data


def test_file_api_matches_buffer_api_and_hashes(tmp_path):
    import hashlib

    data = os.urandom(5 * CHUNK + 3)
    src = tmp_path / "plain"
    src.write_bytes(data)
    with open(src, "rb") as reader, open(tmp_path / "enc", "wb") as writer:
        result = stream.encrypt_file(KEY, AD, reader, writer, chunk_size=CHUNK)
    blob = (tmp_path / "enc").read_bytes()
    assert result.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    assert result.ciphertext_sha256 == hashlib.sha256(blob).hexdigest()
    assert _decrypt(blob) == data


def test_same_plaintext_encrypts_differently():
    data = b"x" * 100
    assert _encrypt(data)[0] != _encrypt(data)[0]  # fresh salt and nonce prefix per file


def _segments(blob: bytes) -> tuple[bytes, list[bytes]]:
    header, body = blob[:stream.HEADER_SIZE], blob[stream.HEADER_SIZE:]
    size = CHUNK + stream.TAG_SIZE
    return header, [body[i:i + size] for i in range(0, len(body), size)]


@pytest.mark.parametrize("attack", [
    "wrong_key", "wrong_ad", "flip_body", "flip_header", "truncate_segment", "drop_last_segment",
    "swap_segments", "duplicate_segment", "append_bytes", "header_only",
])
def test_tampering_fails_authentication(attack):
    data = os.urandom(3 * CHUNK + 5)
    blob, _ = _encrypt(data)
    header, segs = _segments(blob)
    key, ad = KEY, AD
    if attack == "wrong_key":
        key = os.urandom(32)
    elif attack == "wrong_ad":
        ad = b"package=p2;path=a.jpg"  # the same file replayed into another package
    elif attack == "flip_body":
        blob = blob[:100] + bytes([blob[100] ^ 1]) + blob[101:]
    elif attack == "flip_header":
        blob = blob[:20] + bytes([blob[20] ^ 1]) + blob[21:]  # inside the salt
    elif attack == "truncate_segment":
        blob = blob[:-3]
    elif attack == "drop_last_segment":
        blob = header + b"".join(segs[:-1])  # truncation exactly at a segment boundary
    elif attack == "swap_segments":
        blob = header + segs[1] + segs[0] + b"".join(segs[2:])
    elif attack == "duplicate_segment":
        blob = header + segs[0] + b"".join(segs)
    elif attack == "append_bytes":
        blob = blob + os.urandom(stream.TAG_SIZE + 4)
    elif attack == "header_only":
        blob = header
    with pytest.raises(stream.StreamError):
        _decrypt(blob, key, ad)


def test_garbage_is_not_a_stream():
    with pytest.raises(stream.StreamError, match="bad magic"):
        _decrypt(b"not encrypted at all, just text" * 3)


def test_only_the_last_chunk_may_be_short():
    chunks = iter([b"a" * CHUNK, b"b" * 10, b"c" * CHUNK])
    with pytest.raises(ValueError, match="only the last"):
        stream.encrypt_chunks(KEY, AD, chunks, io.BytesIO().write, chunk_size=CHUNK)


def test_threaded_hashing_of_large_inputs_is_correct(tmp_path):
    import hashlib

    data = os.urandom(9 * stream.DEFAULT_CHUNK_SIZE // 2)  # above the threaded-hash threshold
    out = io.BytesIO()
    result = stream.encrypt_bytes(KEY, AD, data, out)
    blob = out.getvalue()
    assert result.ciphertext_sha256 == hashlib.sha256(blob).hexdigest()
    plain = io.BytesIO()
    back = stream.decrypt_file(KEY, AD, io.BytesIO(blob), plain.write)
    assert plain.getvalue() == data
    assert back.plaintext_sha256 == hashlib.sha256(data).hexdigest()
    in_memory = stream.decrypt_bytes(KEY, AD, blob, io.BytesIO().write)
    assert in_memory == back and in_memory.ciphertext_sha256 == result.ciphertext_sha256
