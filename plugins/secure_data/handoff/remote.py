"""Packages on object storage (``s3://``, ``gs://``, any fsspec filesystem).

Object stores have no directory rename, so "complete or absent" is kept the way
the format already allows: ``header.json`` (wrapped key + signature) is uploaded
**last**, after every ciphertext and the manifest. ``read_header`` refuses a
prefix without it ("not a package, or not published completely"), so a reader
never sees a half-uploaded package; a killed upload leaves a headerless prefix
that the retry overwrites object by object and then completes. An existing
header is never overwritten: a published package is immutable.

The builder encrypts into a local staging directory (bounded by the package size,
removed afterwards) and uploads; the consumer downloads the ciphertext into its
private scratch space and verifies it exactly as a local package (signature, file
set, every digest). Object keys that are not safe relative paths are refused, never
written (``a/../../x`` would otherwise escape the download folder). Credentials are
fsspec storage options (s3fs: ``key``, ``secret``, ``token``, ``endpoint_url``),
read from Vault by the operators and never logged or stored.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from secure_data.dataset.layout import UnsafePathError, safe_relpath
from secure_data.handoff.attest import SIGNATURE_FILE
from secure_data.handoff.package import (
    DATA_DIR,
    HEADER_FILE,
    MANIFEST_FILE,
    PackageError,
    PackageFormatError,
    PackageIntegrityError,
    check_package_id,
)

_LOCAL_SCHEMES = ("", "file", "local")


class PackageExistsError(PackageError):
    """A complete package with this id is already published at the destination."""


def is_remote(uri: str | os.PathLike) -> bool:
    """True for ``scheme://`` URIs other than ``file://``."""
    text = os.fspath(uri)
    return "://" in text and urlsplit(text).scheme.lower() not in _LOCAL_SCHEMES


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *(p.strip("/") for p in parts)])


def _fs(uri: str, storage_options: Mapping[str, Any] | None) -> tuple[Any, str]:
    import fsspec

    fs, path = fsspec.core.url_to_fs(uri, **dict(storage_options or {}))
    return fs, str(path).rstrip("/")


def remote_package_id(uri: str) -> str:
    return check_package_id(uri.rstrip("/").rsplit("/", 1)[-1])


def is_published(uri: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = _fs(uri, storage_options)
    return bool(fs.exists(join(path, HEADER_FILE)))


def publish_package(local_dir: str | os.PathLike, packages_root_uri: str,
                    storage_options: Mapping[str, Any] | None = None) -> str:
    """Upload a built package directory to ``<packages_root_uri>/<package id>``; header last. Returns the URI."""
    local_dir = Path(local_dir)
    package_id = check_package_id(local_dir.name)
    uri = join(packages_root_uri, package_id)
    fs, root = _fs(uri, storage_options)
    if fs.exists(join(root, HEADER_FILE)):
        raise PackageExistsError(f"package {package_id!r} is already published at {uri}; packages are immutable")
    data = sorted(p for p in (local_dir / DATA_DIR).rglob("*") if p.is_file())
    signature = [local_dir / SIGNATURE_FILE] if (local_dir / SIGNATURE_FILE).is_file() else []  # model_signing
    for path in [*data, local_dir / MANIFEST_FILE, *signature]:
        fs.put_file(str(path), join(root, path.relative_to(local_dir).as_posix()))
    fs.put_file(str(local_dir / HEADER_FILE), join(root, HEADER_FILE))  # the commit point
    return uri


def fetch_package(uri: str, dest_parent: str | os.PathLike, storage_options: Mapping[str, Any] | None = None,
                  *, only: tuple[str, ...] | None = None) -> Path:
    """Download the package at ``uri`` into ``<dest_parent>/<package id>/`` and return that directory.

    ``only``: just these top-level files (e.g. header and manifest, to verify before downloading data).
    Every object under the prefix is downloaded otherwise, so ``check_file_set`` sees added files too.
    """
    package_id = remote_package_id(uri)
    fs, root = _fs(uri, storage_options)
    if not fs.exists(join(root, HEADER_FILE)):
        raise PackageFormatError(f"{uri}: no {HEADER_FILE}; not a package (or not published completely)")
    dest = Path(dest_parent) / package_id
    dest.mkdir(mode=0o700)
    names = [join(root, name) for name in only] if only else sorted(fs.find(root))
    for name in names:
        rel = name[len(root):].lstrip("/") if name.startswith(root) else name
        try:
            relpath = safe_relpath(rel)
        except UnsafePathError:
            raise PackageIntegrityError(rel, "object key is not a safe relative path (refused, not downloaded)") \
                from None
        target = dest.joinpath(*relpath.parts)
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fs.get_file(name, str(target))
    return dest
