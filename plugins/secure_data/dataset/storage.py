"""Where a dataset is read from: a local directory (used in place) or object storage (mirrored first).

An object-storage source (an ``airflow.sdk.ObjectStoragePath``, any ``upath.UPath``,
or a ``scheme://`` URI string resolved with fsspec) is copied into the run
directory before any check runs, hashing every byte as it is copied. Checks then
run on the local mirror and compare against those hashes, so nothing the remote
store changes after the copy can slip in, and a retried task re-checks the same
snapshot.

This module never imports Airflow: the operator builds the ``ObjectStoragePath``
(with its connection, whose credentials come from Vault through Airflow's secrets
backend) and passes it in; here it is just an object with ``.fs`` and ``.path``.

Never followed, never copied (recorded as refused entries instead): symlinks,
non-regular files, names that are not normalised relative paths inside the root, and
paths too long for the chain (``layout.path_length_problem``).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from secure_data.dataset.atomic import atomic_directory, file_lock
from secure_data.dataset.layout import UnsafePathError, path_length_problem, safe_relpath
from secure_data.dataset.manifest import canonical_json

MIRROR_SCHEMA = "secure-data/mirror/v1"
MIRROR_DATA = "data"
MIRROR_INDEX = "index.jsonl"
CHUNK = 1024 * 1024

# Refusal codes: the same strings as the integrity stage's reason codes.
REFUSED_SYMLINK = "symlink"
REFUSED_NOT_REGULAR = "not_regular_file"
REFUSED_UNSAFE_PATH = "unsafe_path"
REFUSED_UNREADABLE = "unreadable"
REFUSED_PATH_TOO_LONG = "path_too_long"


@dataclass(frozen=True)
class MirroredFile:
    path: str  # POSIX, relative to the source root
    sha256: str  # hex of the bytes as they were copied
    size: int


@dataclass(frozen=True)
class RefusedEntry:
    """Something found in the source that was deliberately not copied."""

    path: str
    code: str
    detail: str
    sha256: str = ""  # for a symlink: SHA-256 of its target string (as git records links)
    size: int = 0


@dataclass(frozen=True)
class Mirror:
    data_root: Path
    files: Mapping[str, MirroredFile]
    refused: tuple[RefusedEntry, ...]


def is_remote(source: Any) -> bool:
    """True for object-storage sources (a path object with a filesystem, or a ``scheme://`` string)."""
    if hasattr(source, "fs") and hasattr(source, "path"):
        return True
    return isinstance(source, str) and "://" in source


def source_label(source: Any) -> str:
    """A printable, secret-free name of the source for manifests: no user info, query or fragment."""
    text = str(source)
    if "://" not in text:
        return os.path.abspath(text)
    parts = urlsplit(text)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _filesystem(source: Any, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    if hasattr(source, "fs") and hasattr(source, "path"):
        return source.fs, str(source.path).rstrip("/")
    import fsspec

    fs, root = fsspec.core.url_to_fs(str(source), **dict(storage_options or {}))
    return fs, str(root).rstrip("/")


def _is_local(fs: Any) -> bool:
    protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
    return protocol in ("file", "local")


def _walk(fs: Any, root: str) -> Iterator[tuple[str, dict[str, Any]]]:
    """Yield (name, info) for every non-directory entry under ``root``, never descending into links."""
    stack = [root]
    while stack:
        directory = stack.pop()
        for info in fs.ls(directory, detail=True):
            name = str(info["name"]).rstrip("/")
            if name == directory:
                continue  # object stores list a "directory marker" as its own child
            if info.get("type") == "directory" and not info.get("islink"):
                stack.append(name)
            else:
                yield name, info


def _copy(fs: Any, name: str, target: Path, local: bool) -> tuple[str, int]:
    """Stream one object to ``target`` and hash it on the way. Local files open with O_NOFOLLOW."""
    digest = hashlib.sha256()
    size = 0
    target.parent.mkdir(parents=True, exist_ok=True)
    if local:
        fd = os.open(name, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            os.close(fd)
            raise OSError(f"{name} is not a regular file")
        src = os.fdopen(fd, "rb")
    else:
        src = fs.open(name, "rb")
    with src, open(target, "xb") as dst:
        while chunk := src.read(CHUNK):
            digest.update(chunk)
            size += len(chunk)
            dst.write(chunk)
    return digest.hexdigest(), size


def _plan(fs: Any, root: str) -> tuple[list[tuple[str, str]], list[RefusedEntry]]:
    """Split the listing into files to copy ((relpath, name)) and refused entries."""
    to_copy: list[tuple[str, str]] = []
    refused: list[RefusedEntry] = []
    prefix = root + "/"
    for name, info in _walk(fs, root):
        if not name.startswith(prefix):
            refused.append(RefusedEntry(name, REFUSED_UNSAFE_PATH, "listed outside the source root"))
            continue
        rel = name[len(prefix):]
        try:
            safe_relpath(rel)
            rel.encode("utf-8")
        except (UnsafePathError, UnicodeEncodeError) as exc:
            refused.append(RefusedEntry(rel, REFUSED_UNSAFE_PATH, str(exc)))
            continue
        if info.get("islink"):
            target = str(info.get("destination", ""))
            refused.append(RefusedEntry(rel, REFUSED_SYMLINK, "symbolic link (not followed)",
                                        sha256=hashlib.sha256(os.fsencode(target)).hexdigest(), size=len(target)))
        elif info.get("type") not in ("file", None):
            refused.append(RefusedEntry(rel, REFUSED_NOT_REGULAR, f"entry of type {info.get('type')!r}"))
        elif (too_long := path_length_problem(rel)) is not None:  # the chain could not carry it: not copied
            refused.append(RefusedEntry(rel, REFUSED_PATH_TOO_LONG, too_long, size=int(info.get("size") or 0)))
        else:
            to_copy.append((rel, name))
    return to_copy, refused


def mirror_source(
    source: Any,
    dest: str | os.PathLike,
    *,
    workers: int = 4,
    storage_options: Mapping[str, Any] | None = None,
) -> Mirror:
    """Copy an object-storage dataset to ``dest/data`` (atomically published), hashing as it copies.

    If ``dest`` already holds a complete mirror (a retried task), it is reused as is:
    the integrity checks rehash every file against its index anyway. Concurrent callers
    (the mapped shards of one run) serialise on a lock file next to ``dest``: the first
    copies, the others wait and reuse its mirror.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    with file_lock(dest.parent / f".{dest.name}.lock"):
        if (dest / MIRROR_INDEX).exists():
            return load_mirror(dest)
        return _mirror(source, dest, workers, storage_options)


def _mirror(source: Any, dest: Path, workers: int, storage_options: Mapping[str, Any] | None) -> Mirror:
    fs, root = _filesystem(source, storage_options)
    local = _is_local(fs)
    to_copy, refused = _plan(fs, root)
    with atomic_directory(dest) as tmp:
        data = tmp / MIRROR_DATA
        data.mkdir()

        def copy_one(item: tuple[str, str]) -> MirroredFile | RefusedEntry:
            rel, name = item
            try:
                sha, size = _copy(fs, name, data / rel, local)
            except OSError as exc:
                return RefusedEntry(rel, REFUSED_UNREADABLE, f"{type(exc).__name__}: {exc}")
            return MirroredFile(rel, sha, size)

        files: dict[str, MirroredFile] = {}
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            for result in pool.map(copy_one, to_copy):
                if isinstance(result, MirroredFile):
                    files[result.path] = result
                else:
                    refused.append(result)
        refused.sort(key=lambda r: r.path)
        lines = [canonical_json({"schema": MIRROR_SCHEMA, "source": source_label(source)})]
        lines += [canonical_json({"path": f.path, "sha256": f.sha256, "size": f.size})
                  for f in sorted(files.values(), key=lambda f: f.path)]
        lines += [canonical_json({"path": r.path, "refused": r.code, "detail": r.detail, "sha256": r.sha256,
                                  "size": r.size}) for r in refused]
        (tmp / MIRROR_INDEX).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return Mirror(dest / MIRROR_DATA, files, tuple(refused))


def load_mirror(dest: str | os.PathLike) -> Mirror:
    """Read a published mirror's index."""
    dest = Path(dest)
    with open(dest / MIRROR_INDEX, encoding="utf-8") as fh:
        header = json.loads(fh.readline())
        if header.get("schema") != MIRROR_SCHEMA:
            raise ValueError(f"{dest / MIRROR_INDEX} is not a {MIRROR_SCHEMA} index")
        files: dict[str, MirroredFile] = {}
        refused: list[RefusedEntry] = []
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            if "refused" in row:
                refused.append(RefusedEntry(row["path"], row["refused"], row["detail"], row["sha256"], row["size"]))
            else:
                files[row["path"]] = MirroredFile(row["path"], row["sha256"], int(row["size"]))
    return Mirror(dest / MIRROR_DATA, files, tuple(refused))
