"""Model files are code (a ``.pt`` is a pickle): load one only if its SHA-256 is the pinned value.

The file is read once and hashed; what gets loaded is that same byte string
(directly, or from a private copy in a fresh 0700 directory for loaders that
want a path), so nobody can swap the file between the check and the load.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ModelIntegrityError(Exception):
    """A model file whose SHA-256 is not the pinned one (or no valid pin was given)."""


def normalise_sha256(value: str) -> str:
    v = (value or "").strip().lower().removeprefix("sha256:")
    if not _HEX64.match(v):
        raise ModelIntegrityError(f"model_sha256 must be 64 hex digits (optionally 'sha256:'-prefixed), got {value!r}")
    return v


def read_pinned(path: str | os.PathLike, sha256: str) -> bytes:
    """Read the whole model file and check it against the pin before anything parses it."""
    pin = normalise_sha256(sha256)
    with open(path, "rb") as fh:
        data = fh.read()
    actual = hashlib.sha256(data).hexdigest()
    if actual != pin:
        raise ModelIntegrityError(
            f"refusing to load model {os.fspath(path)!r}: sha256 {actual} does not match the pinned {pin}"
        )
    return data


@contextlib.contextmanager
def private_copy(data: bytes, suffix: str) -> Iterator[Path]:
    """The verified bytes as a file in a fresh private directory, removed afterwards."""
    directory = Path(tempfile.mkdtemp(prefix="secure-data-model-"))  # mkdtemp: mode 0700
    try:
        path = directory / f"model{suffix}"
        with open(path, "wb") as fh:
            fh.write(data)
        yield path
    finally:
        shutil.rmtree(directory, ignore_errors=True)
