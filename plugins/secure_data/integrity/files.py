"""Per-file work of the integrity stage: find the input files, then read each one once and check it.

``check_entry`` is what the worker pool runs: it opens the file without
following links, hashes exactly the bytes it checks, and turns every problem,
including unexpected exceptions, into a :class:`FileFinding` on the file's record.
"""

from __future__ import annotations

import hashlib
import os
import stat
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import quote

from secure_data.dataset.layout import (
    DATA_YAML,
    LABEL_SUFFIX,
    HardLinkError,
    UnsafePathError,
    classify,
    iter_tree,
    nested_images_problem,
    open_inside,
    path_length_problem,
    safe_relpath,
)
from secure_data.dataset.manifest import FileRecord
from secure_data.dataset.storage import Mirror, RefusedEntry
from secure_data.integrity import codes
from secure_data.integrity.codes import FileFinding
from secure_data.integrity.config import IntegrityConfig
from secure_data.integrity.images import inspect_image
from secure_data.integrity.labels import inspect_label

REGULAR = "regular"
SYMLINK = "symlink"
SPECIAL = "special"
UNSAFE = "unsafe"
REFUSED = "refused"
UNREADABLE_DIR = "unreadable_dir"
_CHUNK = 1024 * 1024


@dataclass(frozen=True)
class InputEntry:
    """One input file as listed (not yet read)."""

    path: str  # manifest path; for an unrepresentable name, an escaped stand-in
    kind: str
    split: str | None
    sample: str | None
    state: str  # regular | symlink | special | unsafe | refused
    fs_name: str = ""  # for unsafe names: the name on disk; for unreadable directories: the error
    expected_sha256: str | None = None  # from the mirror index, when the source was mirrored
    refused: RefusedEntry | None = None


@dataclass(frozen=True)
class FileResult:
    record: FileRecord  # status accepted, no reasons yet: policies are applied later
    findings: tuple[FileFinding, ...] = ()
    readable: bool = True  # False when the bytes were not (or could not be) read: no quarantine copy
    copyable: bool = True  # False when too large to copy into quarantine in memory
    safe_name: bool = True  # False when the name cannot be used as a path inside the quarantine


def _sample_of(rel: str, kind: str, split: str | None) -> str | None:
    """``<split>/<path below the split, without suffix>``: the key that pairs an image with its label.

    This is the YOLO layout's pairing; where Ultralytics would pair differently (a folder named
    ``images`` below ``images/<split>/``), ``check_entry`` rejects the image (``nested_images_folder``).
    """
    if kind not in ("image", "label") or split is None:
        return None
    parts = PurePosixPath(rel).parts
    return f"{split}/{PurePosixPath(*parts[2:]).with_suffix('')}"


def _entry(rel: str, state: str, **kw: Any) -> InputEntry:
    kind, split = classify(rel)
    return InputEntry(path=rel, kind=kind, split=split, sample=_sample_of(rel, kind, split), state=state, **kw)


def _representable(rel: str) -> str | None:
    """The manifest path for ``rel``, or None when the name cannot be a safe manifest path."""
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return None
    try:
        safe_relpath(rel)
    except UnsafePathError:
        return None
    return rel


def escaped_name(rel: str) -> str:
    """A stable, printable stand-in for a file name that is not valid UTF-8 or not a safe path."""
    return "unsafe-name:" + quote(os.fsencode(rel), safe="/")


def list_entries(data_root: Path, mirror: Mirror | None = None) -> list[InputEntry]:
    """Every input file under ``data_root`` (plus a mirror's refused entries), sorted by path.

    Walks through directory descriptors (``secure_data.dataset.layout.iter_tree``) without following
    links: a symlinked directory is one entry (a symlink), never a tree to descend into, also when it
    was swapped in after its parent was listed.
    """
    entries: list[InputEntry] = []
    states = {"regular": REGULAR, "symlink": SYMLINK, "special": SPECIAL}
    for found in iter_tree(data_root):
        rel = found.relpath
        if found.state == "unreadable_dir":
            # An unreadable directory is reported as one input entry rather than crashing the walk.
            entries.append(_entry(rel, UNREADABLE_DIR, fs_name=found.error))
            continue
        if _representable(rel) is None:
            entries.append(_entry(escaped_name(rel) if _has_surrogates(rel) else rel, UNSAFE, fs_name=rel))
            continue
        expected = None
        if mirror is not None:
            known = mirror.files.get(rel)
            expected = known.sha256 if known else ""  # "" = not in the mirror index
        entries.append(_entry(rel, states[found.state], expected_sha256=expected))
    if mirror is not None:
        for refused in mirror.refused:
            path = refused.path if _representable(refused.path) else escaped_name(refused.path)
            entries.append(_entry(path, REFUSED, refused=refused))
    entries.sort(key=lambda e: e.path)
    return entries


def _has_surrogates(rel: str) -> bool:
    try:
        rel.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def read_once(root: Path, rel: str, limit: int) -> tuple[bytes | None, str, int]:
    """Read a regular file once, without following links: (bytes or None if over ``limit``, sha256, size).

    Files over the limit are hashed in chunks and their bytes not kept. Opened through directory
    descriptors (no window between a check and the open); a file with more than one hard link raises
    :class:`HardLinkError` before a byte is read.
    """
    fd = open_inside(root, rel, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0), allow_hard_links=False)
    with os.fdopen(fd, "rb") as fh:
        info = os.fstat(fh.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise IsADirectoryError(f"{rel} is not a regular file")
        # Ask for the file's own size (+1 to see EOF), not for ``limit``: read(n) allocates n bytes up
        # front, and 64 MiB per small file was most of the stage's peak memory and an mmap per read.
        want = min(info.st_size, limit) + 1
        data = fh.read(want)
        if len(data) == want and want <= limit:  # the file grew since fstat: read on up to the limit
            data += fh.read(limit + 1 - want)
        if len(data) <= limit:
            return data, hashlib.sha256(data).hexdigest(), len(data)
        digest = hashlib.sha256(data)
        size = len(data)
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
        return None, digest.hexdigest(), size


def _readlink_inside(root: Path, rel: str) -> str:
    """The target of the symlink ``rel``, read relative to its parent's descriptor (never followed)."""
    parent, _, name = rel.rpartition("/")
    dfd = open_inside(root, parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if parent else os.open(
        root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        return os.readlink(name, dir_fd=dfd)
    finally:
        os.close(dfd)


def _not_read(entry: InputEntry, code: str, detail: str, sha256: str = "", size: int = 0) -> FileResult:
    record = FileRecord(path=entry.path, sha256=sha256, size=size, kind=entry.kind, split=entry.split,
                        sample=entry.sample, meta={"read": False})
    safe = entry.state != UNSAFE and _representable(entry.path) is not None
    return FileResult(record, (FileFinding(code, detail),), readable=False, copyable=False, safe_name=safe)


def check_entry(root: Path, entry: InputEntry, config: IntegrityConfig, n_classes: int, *,
                run_root: Path | None = None) -> FileResult:
    """Read and check one file. Never raises: an unexpected error becomes a ``check_error`` finding.

    ``run_root``: the run folder the later stages write this path under (its length limits the path).
    """
    try:
        return _check_entry(root, entry, config, n_classes, run_root)
    except Exception as exc:  # noqa: BLE001 - one bad file must not take the stage down
        return _not_read(entry, codes.CHECK_ERROR, f"{type(exc).__name__}: {exc}")


def _too_long(root: Path, entry: InputEntry, problem: str, config: IntegrityConfig) -> FileResult:
    """A file whose path the chain cannot carry: hashed (for the record and the quarantine copy), not checked."""
    try:
        _, sha, size = read_once(root, entry.path, 0)
    except HardLinkError as exc:
        return _not_read(entry, codes.HARD_LINK, f"{exc}; also: {problem}")
    except (OSError, UnsafePathError) as exc:
        return _not_read(entry, codes.PATH_TOO_LONG, f"{problem}; unreadable: {type(exc).__name__}: {exc}")
    record = FileRecord(path=entry.path, sha256=sha, size=size, kind=entry.kind, split=entry.split,
                        sample=entry.sample)
    return FileResult(record, (FileFinding(codes.PATH_TOO_LONG, problem),), readable=True,
                      copyable=size <= config.max_file_bytes)


def _check_entry(root: Path, entry: InputEntry, config: IntegrityConfig, n_classes: int,
                 run_root: Path | None) -> FileResult:
    if entry.state == REFUSED:
        r = entry.refused
        assert r is not None
        return _not_read(entry, r.code, r.detail, r.sha256, r.size)
    if entry.state == UNSAFE:
        return _not_read(entry, codes.UNSAFE_PATH, "file name is not valid UTF-8 or not a normalised relative path")
    if entry.state == SYMLINK:
        target = os.fsencode(_readlink_inside(root, entry.path))
        return _not_read(entry, codes.SYMLINK, "symbolic link (not followed)",
                         hashlib.sha256(target).hexdigest(), len(target))
    if entry.state == UNREADABLE_DIR:
        return _not_read(entry, codes.UNREADABLE, f"directory cannot be listed ({entry.fs_name})")
    if entry.state == SPECIAL:
        return _not_read(entry, codes.NOT_REGULAR_FILE, "not a regular file (device, FIFO or socket)")
    # Before anything else: the later stages cannot even write this path (quarantine copies and
    # anonymized outputs would fail with "File name too long" and take their whole task down).
    too_long = path_length_problem(entry.path, run_root=run_root)
    if too_long is not None:
        return _too_long(root, entry, too_long, config)

    if entry.kind == "label":
        limit = config.max_label_bytes
    elif entry.kind == "image":
        limit = config.max_file_bytes
    else:
        limit = 0  # other files: hash only, bytes are not needed
    try:
        data, sha, size = read_once(root, entry.path, limit)
    except HardLinkError as exc:
        return _not_read(entry, codes.HARD_LINK, f"{exc}; not read, not copied")
    except (OSError, UnsafePathError) as exc:
        return _not_read(entry, codes.UNREADABLE, f"{type(exc).__name__}: {exc}")

    findings: list[FileFinding] = []
    if entry.expected_sha256 is not None and sha != entry.expected_sha256:
        findings.append(FileFinding(codes.MIRROR_MISMATCH, "not in the mirror index" if not entry.expected_sha256
                                else f"bytes differ from the copy hashed at mirror time ({entry.expected_sha256})"))
    meta: dict[str, Any] = {}
    copyable = True
    if entry.kind == "image":
        nested = nested_images_problem(entry.path)
        if nested is not None:
            findings.append(FileFinding(codes.NESTED_IMAGES_FOLDER, nested))
        if data is None:
            findings.append(FileFinding(codes.FILE_TOO_LARGE, f"{size} bytes > max_file_bytes {config.max_file_bytes}"))
            copyable = False
        else:
            img_meta, img_findings = inspect_image(data, PurePosixPath(entry.path).suffix,
                                                   max_pixels=config.max_pixels)
            meta.update(img_meta)
            findings.extend(img_findings)
    elif entry.kind == "label":
        if data is None:
            findings.append(FileFinding(codes.FILE_TOO_LARGE, f"{size} bytes > max_label_bytes {config.max_label_bytes}"))
            copyable = False
        else:
            lbl_meta, lbl_findings = inspect_label(data, n_classes=n_classes, tolerance=config.box_tolerance)
            meta.update(lbl_meta)
            findings.extend(lbl_findings)
    elif entry.path != DATA_YAML:
        findings.append(FileFinding(codes.UNEXPECTED_FILE, _unexpected_detail(entry.path)))
        copyable = size <= config.max_file_bytes
    record = FileRecord(path=entry.path, sha256=sha, size=size, kind=entry.kind, split=entry.split,
                        sample=entry.sample, meta=meta)
    return FileResult(record, tuple(findings), readable=True, copyable=copyable)


def _unexpected_detail(path: str) -> str:
    pure = PurePosixPath(path)
    top = pure.parts[0]
    if top == "labels" and len(pure.parts) >= 3 and pure.suffix.lower() == LABEL_SUFFIX:
        # x.TXT: Ultralytics opens exactly <stem>.txt (case-sensitive filesystems), never this file.
        return (f"label suffix {pure.suffix!r} is not {LABEL_SUFFIX!r}: Ultralytics reads "
                f"{str(pure.with_suffix(LABEL_SUFFIX))!r} and would never read this file (its image would "
                "train as a background image)")
    if top in ("images", "labels"):
        return f"suffix {pure.suffix or '(none)'} is not expected under {top}/<split>/"
    return "outside the YOLO layout (data.yaml, images/<split>/, labels/<split>/)"
