"""The YOLO dataset layout: ``data.yaml`` + ``images/<split>/*`` + ``labels/<split>/*.txt``.

Walking never follows a symlink and never yields a path outside the root.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"})
LABEL_SUFFIX = ".txt"
DATA_YAML = "data.yaml"


class UnsafePathError(ValueError):
    """A path that is absolute, climbs out of the dataset root, or passes through a symlink."""


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
    """Join ``relpath`` to ``root``, refusing symlinks anywhere on the way and escapes."""
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
    parts = PurePosixPath(relpath).parts
    suffix = PurePosixPath(relpath).suffix.lower()
    if relpath == DATA_YAML:
        return "meta", None
    if len(parts) >= 3 and parts[0] == "images":
        return ("image" if suffix in IMAGE_SUFFIXES else "other"), parts[1]
    if len(parts) >= 3 and parts[0] == "labels":
        return ("label" if suffix == LABEL_SUFFIX else "other"), parts[1]
    return "other", None


def walk_dataset(root: str | os.PathLike) -> Iterator[DatasetEntry]:
    """Yield every entry under ``root`` in sorted order without following symlinks."""
    base = Path(root)
    stack = [base]
    found: list[DatasetEntry] = []
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as it:
            for entry in it:
                rel = Path(entry.path).relative_to(base).as_posix()
                if entry.is_symlink():
                    kind, split = classify(rel)
                    found.append(DatasetEntry(rel, kind, split, is_regular=False, is_symlink=True))
                elif entry.is_dir(follow_symlinks=False):
                    stack.append(Path(entry.path))
                else:
                    kind, split = classify(rel)
                    regular = entry.is_file(follow_symlinks=False)
                    found.append(DatasetEntry(rel, kind, split, is_regular=regular, is_symlink=False))
    yield from sorted(found, key=lambda e: e.relpath)


def label_relpath_for(image_relpath: str) -> str:
    parts = PurePosixPath(image_relpath).parts
    return str(PurePosixPath("labels", *parts[1:]).with_suffix(LABEL_SUFFIX))


def image_stem_key(relpath: str) -> str:
    parts = PurePosixPath(relpath).parts
    return f"{parts[1]}/{PurePosixPath(*parts[2:]).with_suffix('')}"


def load_class_names(root: str | os.PathLike) -> list[str]:
    """Class names from ``data.yaml`` (list or {id: name} mapping)."""
    with open(resolve_inside(root, DATA_YAML), "rb") as fh:
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
