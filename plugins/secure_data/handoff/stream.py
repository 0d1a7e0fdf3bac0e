"""Chunked AES-256-GCM for files of any size with bounded memory (Tink-shaped streaming AEAD).

The construction is the one Tink documents as ``AES-GCM-HKDF streaming`` and
Hoang et al. analyse as STREAM; nothing here is a new primitive, only
``cryptography``'s AESGCM and HKDF composed the standard way:

* a per-file key ``K_f = HKDF-SHA256(ikm=data key, salt=random 32 bytes, info=AD)``,
  so the package data key is never used directly and random nonce prefixes
  cannot collide across the many files one data key protects;
* the plaintext is cut into segments of ``chunk_size`` bytes (the last one may be
  shorter or empty), each sealed with AES-256-GCM under ``K_f`` and the nonce
  ``prefix(7) || segment index (uint32 BE) || last flag (0x00 | 0x01)``;
* every segment's GCM associated data is the file header followed by ``AD``.

Reordering, dropping, duplicating or appending segments and truncating at a
segment boundary all fail authentication (index and last flag live in the nonce).

File layout (all integers big-endian)::

    magic  b"SDS1"                      4 bytes   secure-data stream, version 1
    chunk_size                          4 bytes   plaintext bytes per segment
    salt                               32 bytes   HKDF salt, random per file
    nonce_prefix                        7 bytes   random per file
    segment 0 .. n-1                   chunk_size + 16 bytes each (GCM tag last)
    segment n (last flag set)          0 .. chunk_size + 16 bytes

Hashing (plaintext and ciphertext SHA-256 for the signed manifest) runs on a
background thread for big inputs: ``hashlib`` releases the GIL, so the digests
cost little wall-clock time next to the AES work.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import queue
import struct
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import BinaryIO

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

MAGIC = b"SDS1"
SALT_SIZE = 32
NONCE_PREFIX_SIZE = 7
TAG_SIZE = 16
HEADER_SIZE = len(MAGIC) + 4 + SALT_SIZE + NONCE_PREFIX_SIZE  # 47
DEFAULT_CHUNK_SIZE = 1 << 20  # 1 MiB: big enough for full AES speed, small enough to bound memory
MIN_CHUNK_SIZE = 1 << 12
MAX_CHUNK_SIZE = 1 << 26
MAX_SEGMENTS = 1 << 32
CONSTRUCTION = "AES256-GCM-HKDF-SHA256-STREAM/v1"
_THREADED_HASH_MIN = 4 * DEFAULT_CHUNK_SIZE  # below this a thread costs more than it saves
_BACKLOG = 4  # segments queued for a hashing thread
# Buffers per ring: the queued ones, the one being hashed, the one being filled, and the lookahead.
_RING_SLOTS = _BACKLOG + 3


class StreamError(Exception):
    """A ciphertext that cannot be decrypted: wrong key or associated data, tampering, truncation."""


@dataclass(frozen=True)
class StreamResult:
    """Digests and sizes of what went through one encryption or decryption."""

    plaintext_sha256: str
    plaintext_size: int
    ciphertext_sha256: str
    ciphertext_size: int


def ciphertext_size(plaintext_size: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> int:
    """Exact size of the encrypted file for a plaintext of ``plaintext_size`` bytes."""
    segments = max(1, -(-plaintext_size // chunk_size))  # an empty plaintext still has one (empty) segment
    return HEADER_SIZE + plaintext_size + segments * TAG_SIZE


def _file_key(key: bytes, salt: bytes, associated_data: bytes) -> AESGCM:
    if len(key) != 32:
        raise ValueError("the data key must be 32 bytes (AES-256)")
    derived = HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=associated_data).derive(key)
    return AESGCM(derived)


def _nonce(prefix: bytes, index: int, last: bool) -> bytes:
    if index >= MAX_SEGMENTS:
        raise ValueError("too many segments for one file")
    return prefix + struct.pack(">IB", index, 1 if last else 0)


class _Digest:
    """SHA-256 that can run on a helper thread with a bounded backlog (memory stays bounded).

    ``update`` may be handed a view of a reused buffer: the caller's ring has more
    slots than this queue can hold plus the one being hashed, so a slot is never
    rewritten before its digest update ran.
    """

    def __init__(self, threaded: bool) -> None:
        self._hash = hashlib.sha256()
        self._queue: queue.Queue | None = None
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        if threaded:
            self._queue = queue.Queue(maxsize=_BACKLOG)
            self._thread = threading.Thread(target=self._run, name="secure-data-sha256", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        assert self._queue is not None
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._hash.update(item)
            except BaseException as exc:  # surfaced in hexdigest(); keep draining so put() never blocks
                self._error = exc

    def update(self, data: bytes | memoryview) -> None:
        if self._queue is None:
            self._hash.update(data)
        else:
            self._queue.put(data)

    def hexdigest(self) -> str:
        self.close()
        if self._error is not None:
            raise self._error
        return self._hash.hexdigest()

    def close(self) -> None:
        if self._thread is not None:
            assert self._queue is not None
            self._queue.put(None)
            self._thread.join()
            self._thread = None


class _NoDigest:
    def update(self, data: bytes | memoryview) -> None:
        pass

    def hexdigest(self) -> str:
        return ""

    def close(self) -> None:
        pass


class _Ring:
    """Reusable buffers, so a 100 MB file does not cost 100 fresh 1 MiB allocations (page faults
    dominated AES-GCM time when every segment got a new ``bytes``). Slots are allocated lazily."""

    def __init__(self, slots: int) -> None:
        self._slots: list[bytearray | None] = [None] * slots
        self._next = 0

    def view(self, size: int) -> memoryview:
        """A writable view of exactly ``size`` bytes in the next slot."""
        index = self._next
        self._next = (index + 1) % len(self._slots)
        slot = self._slots[index]
        if slot is None or len(slot) < size:
            slot = self._slots[index] = bytearray(size)
        return memoryview(slot)[:size]


_POOL = threading.local()
_POOL_KEEP = 2  # rings kept per thread: one for reading, one for the output (~14 MiB at 1 MiB chunks)


@contextlib.contextmanager
def _borrowed_ring() -> Iterator[_Ring]:
    """A ring from this thread's pool: fresh 1 MiB buffers cost page faults that, for files of a few
    MB, took longer than the AES work itself. Returned only after every digest thread has finished."""
    free = getattr(_POOL, "rings", None)
    if free is None:
        free = _POOL.rings = []
    ring = free.pop() if free else _Ring(_RING_SLOTS)
    try:
        yield ring
    finally:
        if len(free) < _POOL_KEEP:
            free.append(ring)


def _lookahead(chunks: Iterator[bytes | memoryview]) -> Iterator[tuple[bytes | memoryview, bool]]:
    """Yield ``(chunk, is_last)``; an empty input yields one empty last chunk."""
    current = next(chunks, None)
    if current is None:
        yield b"", True
        return
    for following in chunks:
        yield current, False
        current = following
    yield current, True


def iter_buffer(data: bytes | memoryview, chunk_size: int) -> Iterator[memoryview]:
    view = memoryview(data)
    for start in range(0, len(view), chunk_size):
        yield view[start:start + chunk_size]


def iter_reader(reader: BinaryIO, chunk_size: int, *, ring: _Ring | None = None,
                size_hint: int | None = None) -> Iterator[bytes | memoryview]:
    """Chunks of exactly ``chunk_size`` bytes (the last may be shorter), read into reusable buffers."""
    ring = ring or _Ring(_RING_SLOTS)  # callers that pool buffers pass their own
    # A known small file gets a buffer one byte larger than itself: one read, and EOF is seen at once.
    slot_size = chunk_size if size_hint is None else min(chunk_size, size_hint + 1)
    while True:
        view = ring.view(slot_size)
        filled = _readinto_full(reader, view)
        if not filled:
            return
        yield view[:filled]
        if filled < slot_size:
            return
        slot_size = chunk_size  # the file was longer than its size hint: read on in full chunks


def _readinto_full(reader: BinaryIO, view: memoryview) -> int:
    """Fill ``view`` unless EOF comes first (short reads from pipes must not shift segment bounds)."""
    filled = 0
    readinto = getattr(reader, "readinto", None)
    while filled < len(view):
        if readinto is not None:
            got = readinto(view[filled:])
        else:
            data = reader.read(len(view) - filled)
            got = len(data)
            view[filled:filled + got] = data
        if not got:
            break
        filled += got
    return filled


def encrypt_chunks(
    key: bytes,
    associated_data: bytes,
    chunks: Iterator[bytes | memoryview],
    write: Callable[[memoryview], object],
    *,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    size_hint: int | None = None,
    hash_plaintext: bool = True,
    hash_ciphertext: bool = True,
) -> StreamResult:
    """Encrypt plaintext ``chunks`` (each exactly ``chunk_size`` bytes but the last) to ``write``.

    ``write`` gets a view of a reused buffer and must consume it before returning
    (a file's ``write`` does). ``hash_plaintext=False`` skips the plaintext digest when
    the caller has just verified it (``verified_read``); ``plaintext_sha256`` is then empty.
    ``hash_ciphertext=False`` is for measuring the AEAD alone (the benchmark).
    """
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise ValueError(f"chunk_size must be between {MIN_CHUNK_SIZE} and {MAX_CHUNK_SIZE}")
    salt = os.urandom(SALT_SIZE)
    prefix = os.urandom(NONCE_PREFIX_SIZE)
    header = MAGIC + struct.pack(">I", chunk_size) + salt + prefix
    aead = _file_key(key, salt, associated_data)
    segment_ad = header + associated_data
    threaded = size_hint is None or size_hint >= _THREADED_HASH_MIN
    pt_hash = _Digest(threaded) if hash_plaintext else None
    ct_hash = _Digest(threaded) if hash_ciphertext else _NoDigest()
    with _borrowed_ring() as out:
        return _seal_all(aead, prefix, header, segment_ad, chunks, write, chunk_size, pt_hash, ct_hash, out)


def _seal_all(aead: AESGCM, prefix: bytes, header: bytes, segment_ad: bytes,
              chunks: Iterator[bytes | memoryview], write: Callable[[memoryview], object], chunk_size: int,
              pt_hash: _Digest | None, ct_hash: _Digest | _NoDigest, out: _Ring) -> StreamResult:
    pt_size = 0
    ct_size = len(header)
    try:
        write(memoryview(header))
        ct_hash.update(header)
        for index, (chunk, last) in enumerate(_lookahead(chunks)):
            if not last and len(chunk) != chunk_size:
                raise ValueError(f"segment {index} has {len(chunk)} bytes; only the last may be short")
            if pt_hash is not None:
                pt_hash.update(chunk)
            sealed = out.view(len(chunk) + TAG_SIZE)
            aead.encrypt_into(_nonce(prefix, index, last), chunk, segment_ad, sealed)
            write(sealed)
            ct_hash.update(sealed)
            pt_size += len(chunk)
            ct_size += len(sealed)
        return StreamResult(
            plaintext_sha256=pt_hash.hexdigest() if pt_hash is not None else "",
            plaintext_size=pt_size,
            ciphertext_sha256=ct_hash.hexdigest(),
            ciphertext_size=ct_size,
        )
    finally:
        ct_hash.close()
        if pt_hash is not None:
            pt_hash.close()


def encrypt_bytes(key: bytes, associated_data: bytes, data: bytes, writer: BinaryIO, *,
                  chunk_size: int = DEFAULT_CHUNK_SIZE, hash_plaintext: bool = True) -> StreamResult:
    return encrypt_chunks(key, associated_data, iter_buffer(data, chunk_size), writer.write,
                          chunk_size=chunk_size, size_hint=len(data), hash_plaintext=hash_plaintext)


def encrypt_file(key: bytes, associated_data: bytes, reader: BinaryIO, writer: BinaryIO, *,
                 chunk_size: int = DEFAULT_CHUNK_SIZE, hashes: bool = True) -> StreamResult:
    """Encrypt ``reader`` to ``writer`` with both digests (``hashes=False``: the AEAD alone, for benchmarks)."""
    size_hint = _size_of(reader)
    with _borrowed_ring() as ring:  # released after encrypt_chunks joined its digest threads
        chunks = iter_reader(reader, chunk_size, ring=ring, size_hint=size_hint)
        return encrypt_chunks(key, associated_data, chunks, writer.write, chunk_size=chunk_size,
                              size_hint=size_hint, hash_plaintext=hashes, hash_ciphertext=hashes)


def decrypt_file(
    key: bytes,
    associated_data: bytes,
    reader: BinaryIO,
    write: Callable[[memoryview], object],
    *,
    expected_chunk_size: int | None = None,
    hashes: bool = True,
) -> StreamResult:
    """Decrypt and authenticate, handing each verified plaintext segment to ``write``.

    Both digests are computed (the caller compares them with the signed manifest);
    ``hashes=False`` is for measuring the AEAD alone (the benchmark).

    A segment's plaintext is released only after its tag checked out, but a later
    segment may still fail: callers must treat everything written as void when
    this raises (``open_package`` wipes its scratch space). ``write`` gets a view of a
    reused buffer and must consume it before returning.
    """
    size_hint = _size_of(reader)
    header = _read_exact(reader, HEADER_SIZE)
    aead, prefix, chunk_size, segment_ad = _open_header(key, associated_data, header, expected_chunk_size)
    threaded = size_hint is None or size_hint >= _THREADED_HASH_MIN
    pt_hash, ct_hash = (_Digest(threaded), _Digest(threaded)) if hashes else (_NoDigest(), _NoDigest())
    ct_hash.update(header)
    body_hint = None if size_hint is None else size_hint - HEADER_SIZE
    with _borrowed_ring() as inbox, _borrowed_ring() as out:
        segments = iter_reader(reader, chunk_size + TAG_SIZE, ring=inbox, size_hint=body_hint)
        return _open_all(aead, prefix, segment_ad, segments, write, pt_hash, ct_hash, out, len(header))


def decrypt_bytes(
    key: bytes,
    associated_data: bytes,
    data: bytes | memoryview,
    write: Callable[[memoryview], object],
    *,
    expected_chunk_size: int | None = None,
    hashes: bool = True,
) -> StreamResult:
    """``decrypt_file`` for a ciphertext already in memory: segments are views of ``data`` (no copy)."""
    view = memoryview(data)
    header = bytes(view[:HEADER_SIZE])
    aead, prefix, chunk_size, segment_ad = _open_header(key, associated_data, header, expected_chunk_size)
    threaded = len(view) >= _THREADED_HASH_MIN
    pt_hash, ct_hash = (_Digest(threaded), _Digest(threaded)) if hashes else (_NoDigest(), _NoDigest())
    ct_hash.update(header)
    with _borrowed_ring() as out:
        segments = iter_buffer(view[HEADER_SIZE:], chunk_size + TAG_SIZE)
        return _open_all(aead, prefix, segment_ad, segments, write, pt_hash, ct_hash, out, len(header))


def _open_header(key: bytes, associated_data: bytes, header: bytes,
                 expected_chunk_size: int | None) -> tuple[AESGCM, bytes, int, bytes]:
    """Check a stream header; returns the file's AEAD, nonce prefix, chunk size and segment AD."""
    if len(header) < HEADER_SIZE or header[:4] != MAGIC:
        raise StreamError("not a secure-data stream (bad magic or header too short)")
    (chunk_size,) = struct.unpack(">I", header[4:8])
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise StreamError(f"chunk size {chunk_size} in the header is out of range")
    if expected_chunk_size is not None and chunk_size != expected_chunk_size:
        raise StreamError(f"chunk size {chunk_size} differs from the signed {expected_chunk_size}")
    salt = header[8:8 + SALT_SIZE]
    prefix = header[8 + SALT_SIZE:HEADER_SIZE]
    return _file_key(key, salt, associated_data), prefix, chunk_size, header + associated_data


def _open_all(aead: AESGCM, prefix: bytes, segment_ad: bytes, segments: Iterator[bytes | memoryview],
              write: Callable[[memoryview], object], pt_hash: _Digest | _NoDigest, ct_hash: _Digest | _NoDigest,
              out: _Ring, header_size: int) -> StreamResult:
    pt_size, ct_size = 0, header_size
    try:
        for index, (sealed, last) in enumerate(_lookahead(segments)):
            if len(sealed) < TAG_SIZE:
                what = "no segment after the header" if index == 0 and not sealed else f"segment {index} truncated"
                raise StreamError(f"stream truncated: {what} ({len(sealed)} bytes)")
            ct_hash.update(sealed)
            plain = out.view(len(sealed) - TAG_SIZE)
            try:
                aead.decrypt_into(_nonce(prefix, index, last), sealed, segment_ad, plain)
            except InvalidTag:
                raise StreamError(
                    f"segment {index} failed authentication (wrong key or associated data, "
                    "modified, reordered or truncated ciphertext)"
                ) from None
            pt_hash.update(plain)
            write(plain)
            pt_size += len(plain)
            ct_size += len(sealed)
        return StreamResult(
            plaintext_sha256=pt_hash.hexdigest(),
            plaintext_size=pt_size,
            ciphertext_sha256=ct_hash.hexdigest(),
            ciphertext_size=ct_size,
        )
    finally:
        pt_hash.close()
        ct_hash.close()


def _read_exact(reader: BinaryIO, size: int) -> bytes:
    data = reader.read(size)
    while len(data) < size:
        more = reader.read(size - len(data))
        if not more:
            break
        data += more
    return data


def _size_of(reader: BinaryIO) -> int | None:
    try:
        return os.fstat(reader.fileno()).st_size
    except (AttributeError, OSError, ValueError):
        return None
