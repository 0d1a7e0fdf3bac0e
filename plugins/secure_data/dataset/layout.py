"""The YOLO dataset layout: ``data.yaml`` + ``images/<split>/*`` + ``labels/<split>/*.txt``.

Walking never follows a symlink and never yields a path outside the root. Both walking and opening
go through directory file descriptors (:func:`open_inside`, :func:`iter_tree`): every component is
opened relative to its parent's descriptor with ``O_NOFOLLOW|O_DIRECTORY``, so swapping a directory
for a symlink between a check and an open has nothing to win: there is no separate check.

Pairing follows what the trainer does, not what looks reasonable: Ultralytics finds an image's
label with ``img2label_paths`` (the LAST ``/images/`` of the path becomes ``/labels/``, the
suffix becomes the literal ``.txt``, case-sensitive). :func:`trainer_label_relpath` is that rule.

Path lengths: the chain writes every dataset path again under the run directory (quarantine
copies + ``.reason.json``, anonymized outputs, each through a temporary sibling), so a name that
is legal in the source can be too long there. :func:`path_length_problem` is the limit the
integrity stage enforces, so later stages never meet such a name.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from secure_data.dataset.atomic import NAME_MAX, TEMP_NAME_OVERHEAD

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})  # any case
LABEL_SUFFIX = ".txt"  # exactly: Ultralytics appends this literal, so "x.TXT" is never read as a label
DATA_YAML = "data.yaml"

PATH_MAX = 4096  # bytes, including the terminating NUL (Linux)
# The longest suffix the chain appends to a dataset file name: the quarantine's ".reason.json"
# (12 bytes), written through a temporary sibling ".<name>.reason.json.<8 random>.tmp" (+14).
NAME_SUFFIX_BUDGET = len(".reason.json") + TEMP_NAME_OVERHEAD
MAX_NAME_BYTES = NAME_MAX - NAME_SUFFIX_BUDGET  # 229: longest file name the chain accepts
# Longest relative path the chain accepts: every stage and the trainer's scratch folder re-create
# the path under their own root, so it must leave room for that root (a fixed limit keeps a package
# usable on a machine with a longer scratch path than ours).
MAX_RELPATH_BYTES = 1024
# Room for the folders a stage puts between the run root and a dataset path
# ("quarantine/<stage>/", "<stage>/data/"): stage names are short identifiers.
RUN_SUBDIR_BUDGET = 32


class UnsafePathError(ValueError):
    """A path that is absolute, climbs out of the dataset root, or passes through a symlink."""


class HardLinkError(UnsafePathError):
    """A regular file with more than one hard link: its bytes may be another file's, anywhere on the
    filesystem (a link to ``/etc/shadow`` looks like any other file). Never read, never copied."""


_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _NOFOLLOW | _CLOEXEC
_LINK_ERRNOS = (errno.ELOOP, errno.ENOTDIR, errno.EMLINK)


def open_root(root: str | os.PathLike) -> int:
    """A directory descriptor of the dataset root (the root itself is the deployment's or triggerer's choice)."""
    return os.open(root, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0) | _CLOEXEC)


def open_inside(root: str | os.PathLike | int, relpath: str, flags: int = os.O_RDONLY, *,
                allow_hard_links: bool = True) -> int:
    """Open ``relpath`` under ``root`` (a path or a directory descriptor) without following any symlink.

    Each directory is opened relative to its parent's descriptor (``openat`` with ``O_NOFOLLOW|O_DIRECTORY``),
    the file itself with ``O_NOFOLLOW``: a symlink anywhere on the way, placed there before or during the
    call, fails with :class:`UnsafePathError`. ``allow_hard_links=False``: a regular file with a link count
    above one raises :class:`HardLinkError` (checked on the open descriptor). Returns a file descriptor.
    """
    pure = safe_relpath(relpath)
    dfd = open_root(root) if not isinstance(root, int) else os.dup(root)
    try:
        for part in pure.parts[:-1]:
            try:
                child = os.open(part, _DIR_FLAGS, dir_fd=dfd)
            except OSError as exc:
                if exc.errno in _LINK_ERRNOS:
                    raise UnsafePathError(f"{relpath!r} passes through a symlink or non-directory at {part!r}") from None
                raise
            os.close(dfd)
            dfd = child
        try:
            fd = os.open(pure.parts[-1], flags | _NOFOLLOW | _CLOEXEC, dir_fd=dfd)
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                raise UnsafePathError(f"{relpath!r} is a symlink (not followed)") from None
            raise
    finally:
        os.close(dfd)
    if not allow_hard_links:
        info = os.fstat(fd)
        if stat.S_ISREG(info.st_mode) and info.st_nlink > 1:
            os.close(fd)
            raise HardLinkError(f"{relpath!r} has {info.st_nlink} hard links: its bytes may belong to a file "
                                "outside the dataset")
    return fd


@dataclass(frozen=True)
class TreeEntry:
    """One non-directory entry found by :func:`iter_tree` (or a directory that could not be listed)."""

    relpath: str
    state: str  # "regular" | "symlink" | "special" | "unreadable_dir"
    error: str = ""


def iter_tree(root: str | os.PathLike) -> Iterator[TreeEntry]:
    """Every entry under ``root`` (unsorted), listed through directory descriptors.

    A subdirectory is entered with ``openat(parent_fd, name, O_NOFOLLOW|O_DIRECTORY)``: one swapped for a
    symlink after it was listed is reported as a symlink, never followed. Open descriptors: one per level
    of the directory currently walked.
    """
    root_fd = open_root(root)
    stack: list[tuple[str, int, Iterator[os.DirEntry]]] = []

    def enter(rel_dir: str, fd: int) -> TreeEntry | None:
        try:
            entries = sorted(os.scandir(fd), key=lambda e: e.name)
        except OSError as exc:
            os.close(fd)
            return TreeEntry(rel_dir, "unreadable_dir", f"{type(exc).__name__}: {exc.strerror}")
        stack.append((rel_dir, fd, iter(entries)))
        return None

    failed = enter("", root_fd)
    if failed is not None:
        yield failed
    try:
        while stack:
            rel_dir, dfd, entries = stack[-1]
            entry = next(entries, None)
            if entry is None:
                stack.pop()
                os.close(dfd)
                continue
            rel = f"{rel_dir}/{entry.name}" if rel_dir else entry.name
            if entry.is_symlink():
                yield TreeEntry(rel, "symlink")
            elif entry.is_dir(follow_symlinks=False):
                try:
                    child = os.open(entry.name, _DIR_FLAGS, dir_fd=dfd)
                except OSError as exc:
                    if exc.errno in _LINK_ERRNOS:  # swapped for a symlink or a file since it was listed
                        yield TreeEntry(rel, "symlink")
                    else:
                        yield TreeEntry(rel, "unreadable_dir", f"{type(exc).__name__}: {exc.strerror}")
                    continue
                failed = enter(rel, child)
                if failed is not None:
                    yield failed
            elif entry.is_file(follow_symlinks=False):
                yield TreeEntry(rel, "regular")
            else:
                yield TreeEntry(rel, "special")
    finally:
        for _, dfd, _ in stack:
            os.close(dfd)


@dataclass(frozen=True)
class DatasetEntry:
    """One regular file found under the dataset root (or a non-regular one, flagged)."""

    relpath: str  # POSIX, relative to the root
    kind: str  # "image" | "label" | "meta" | "other"
    split: str | None
    is_regular: bool
    is_symlink: bool

    @property
    def stem_key(self) -> str | None:
        """``<split>/<stem>``: what pairs an image with its label."""
        if self.split is None:
            return None
        parts = PurePosixPath(self.relpath).parts
        # images/<split>/a/b.jpg -> <split>/a/b
        inner = PurePosixPath(*parts[2:])
        return f"{self.split}/{inner.with_suffix('')}"


def safe_relpath(relpath: str) -> PurePosixPath:
    """Validate a manifest-relative path: relative, normalised, no '..', no NUL."""
    if not relpath or "\x00" in relpath or "\\" in relpath:
        raise UnsafePathError(f"invalid relative path {relpath!r}")
    pure = PurePosixPath(relpath)
    if pure.is_absolute() or any(part in ("..", "") for part in pure.parts) or str(pure) != relpath:
        raise UnsafePathError(f"path {relpath!r} is not a normalised relative path inside the root")
    return pure


def resolve_inside(root: str | os.PathLike, relpath: str) -> Path:
    """Join ``relpath`` to ``root``, refusing symlinks anywhere on the way and escapes.

    A check of the path as it is now: to read or write, use :func:`open_inside`, which leaves no
    window between the check and the open."""
    base = Path(root)
    pure = safe_relpath(relpath)
    current = base
    for part in pure.parts:
        current = current / part
        try:
            st = os.lstat(current)
        except FileNotFoundError:
            raise
        if stat.S_ISLNK(st.st_mode):
            raise UnsafePathError(f"{relpath!r} passes through a symlink at {current}")
    return current


def classify(relpath: str) -> tuple[str, str | None]:
    """(kind, split) of a dataset path. Image suffixes match in any case (as in Ultralytics); the label
    suffix only as ``.txt`` exactly, because that is the only name the trainer ever opens."""
    parts = PurePosixPath(relpath).parts
    suffix = PurePosixPath(relpath).suffix
    if relpath == DATA_YAML:
        return "meta", None
    if len(parts) >= 3 and parts[0] == "images":
        return ("image" if suffix.lower() in IMAGE_SUFFIXES else "other"), parts[1]
    if len(parts) >= 3 and parts[0] == "labels":
        return ("label" if suffix == LABEL_SUFFIX else "other"), parts[1]
    return "other", None


def trainer_label_relpath(image_relpath: str) -> str:
    """The label path Ultralytics reads for an image (``ultralytics.data.utils.img2label_paths``).

    Its rule on the absolute path: the last ``/images/`` becomes ``/labels/``, everything after the
    last ``.`` becomes ``txt``. The dataset root holds ``images/``, so the last ``/images/`` of the
    absolute path always lies inside the relative one and the rule can be applied to ``"/" + relpath``.
    """
    head, sep, tail = f"/{image_relpath}".rpartition("/images/")
    joined = f"{head}/labels/{tail}" if sep else f"/{image_relpath}"
    return joined[1:].rsplit(".", 1)[0] + LABEL_SUFFIX


def layout_label_relpath(image_relpath: str) -> str:
    """The label path the YOLO layout pairs with an image: ``images/<split>/a/b.jpg`` -> ``labels/<split>/a/b.txt``."""
    parts = PurePosixPath(image_relpath).parts
    return str(PurePosixPath("labels", *parts[1:]).with_suffix(LABEL_SUFFIX))


def nested_images_problem(image_relpath: str) -> str | None:
    """Why the trainer would not read the label the layout pairs with this image, or None.

    That happens when a folder below ``images/`` is itself called ``images`` (``images/train/sub/images/x.jpg``,
    or a split called ``images``): Ultralytics swaps the LAST one and reads ``images/train/sub/labels/x.txt``.
    """
    ours, trainer = layout_label_relpath(image_relpath), trainer_label_relpath(image_relpath)
    if ours == trainer:
        return None
    return (f"Ultralytics reads this image's labels from {trainer!r} (the last 'images' folder of the path "
            f"becomes 'labels'), not from {ours!r}: a folder named 'images' below images/ is not supported")


def _utf8_len(text: str) -> int:
    return len(text.encode("utf-8", "surrogateescape"))


def fits_under(base: str | os.PathLike, relpath: str, *, suffix_budget: int = NAME_SUFFIX_BUDGET) -> bool:
    """True when ``base/relpath`` plus a suffix of ``suffix_budget`` bytes is a legal path (NAME_MAX, PATH_MAX)."""
    name = relpath.rsplit("/", 1)[-1]
    total = len(os.fsencode(base)) + 1 + _utf8_len(relpath) + suffix_budget
    return _utf8_len(name) + suffix_budget <= NAME_MAX and total < PATH_MAX


def path_length_problem(relpath: str, *, run_root: str | os.PathLike | None = None) -> str | None:
    """Why the chain cannot carry ``relpath``, or None. The limits are documented in docs/integrity.md.

    The file name may have at most MAX_NAME_BYTES (NAME_MAX less what the chain appends to it), the
    path at most MAX_RELPATH_BYTES, and, given ``run_root``, the path must fit under the run's
    deepest stage folder with those suffixes (PATH_MAX).
    """
    name = relpath.rsplit("/", 1)[-1]
    if _utf8_len(name) > MAX_NAME_BYTES:
        return (f"file name is {_utf8_len(name)} bytes; the chain appends up to {NAME_SUFFIX_BUDGET} bytes "
                f"(.reason.json, temporary files) and NAME_MAX is {NAME_MAX}: at most {MAX_NAME_BYTES} bytes")
    if _utf8_len(relpath) > MAX_RELPATH_BYTES:
        return f"path is {_utf8_len(relpath)} bytes; at most {MAX_RELPATH_BYTES} bytes are accepted"
    if run_root is not None and not fits_under(Path(run_root) / ("x" * (RUN_SUBDIR_BUDGET - 1)), relpath):
        return (f"path is {_utf8_len(relpath)} bytes and does not fit under the run folder {os.fspath(run_root)!r} "
                f"({len(os.fsencode(run_root))} bytes) with the stage folders and suffixes (PATH_MAX {PATH_MAX})")
    return None


def walk_dataset(root: str | os.PathLike) -> Iterator[DatasetEntry]:
    """Yield every entry under ``root`` in sorted order without following symlinks (:func:`iter_tree`)."""
    found: list[DatasetEntry] = []
    for entry in iter_tree(root):
        if entry.state == "unreadable_dir":
            raise PermissionError(f"cannot list {entry.relpath or '.'} under {os.fspath(root)}: {entry.error}")
        kind, split = classify(entry.relpath)
        found.append(DatasetEntry(entry.relpath, kind, split, is_regular=entry.state == "regular",
                                  is_symlink=entry.state == "symlink"))
    yield from sorted(found, key=lambda e: e.relpath)


def label_relpath_for(image_relpath: str) -> str:
    """The label the trainer reads for an image (see :func:`trainer_label_relpath`)."""
    return trainer_label_relpath(image_relpath)


def image_stem_key(relpath: str) -> str:
    parts = PurePosixPath(relpath).parts
    return f"{parts[1]}/{PurePosixPath(*parts[2:]).with_suffix('')}"


def load_class_names(root: str | os.PathLike) -> list[str]:
    """Class names from ``data.yaml`` (list or {id: name} mapping)."""
    with os.fdopen(open_inside(root, DATA_YAML), "rb") as fh:
        return parse_class_names(fh.read())


def parse_class_names(data: bytes) -> list[str]:
    """Class names from the bytes of a ``data.yaml`` (so a caller can hash and parse the same read).

    A mapping must have the ids 0..n-1 exactly: a gap would silently shift every later class.
    """
    import yaml  # PyYAML ships with Airflow; local import keeps parse time low

    try:
        doc = yaml.safe_load(data.decode("utf-8")) or {}
    except (UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{DATA_YAML} is not valid UTF-8 YAML: {exc}") from exc
    names = doc.get("names") if isinstance(doc, dict) else None
    if isinstance(names, dict):
        try:
            ids = sorted(int(k) for k in names)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{DATA_YAML} 'names' mapping has a non-integer id") from exc
        if ids != list(range(len(ids))):
            raise ValueError(f"{DATA_YAML} 'names' ids must be 0..{len(ids) - 1} without gaps, got {ids}")
        by_id = {int(k): v for k, v in names.items()}
        result = [by_id[i] for i in ids]
    elif isinstance(names, list):
        result = list(names)
    else:
        raise ValueError(f"{DATA_YAML} has no 'names' list or mapping")
    if not result or not all(isinstance(n, str | int) and str(n).strip() for n in result):
        raise ValueError(f"{DATA_YAML} 'names' must be a non-empty list of non-empty names")
    return [str(n) for n in result]
