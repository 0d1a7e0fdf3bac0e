"""The training side: verify a package, decrypt it into private scratch space, wipe it afterwards.

``open_package`` is the one entry point::

    with open_package(uri, key_service) as pkg:      # signature, file set, key, every hash
        train(data=pkg.data_yaml)                     # pkg.path: dataset root in YOLO layout

Nothing is yielded before every file has been decrypted and its plaintext SHA-256
matched the signed manifest; the scratch directory (mode 0700, on ``/dev/shm`` when
it is there and large enough) is removed on exit, on failure too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import sys
import tempfile
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from secure_data.dataset.layout import DATA_YAML, UnsafePathError, safe_relpath
from secure_data.handoff import remote
from secure_data.handoff.keyservice import KeyService
from secure_data.handoff.package import (
    PackageError,
    PackageFormatError,
    PackageInfo,
    check_file_set,
    decrypt_file_to,
    package_path,
    unwrap_data_key,
    verify_package,
)

SHM = Path("/dev/shm")
TRAINING_YAML = "data.yaml"  # written next to (not inside) the dataset root
_SPLITS = ("train", "val", "test")
_HEADROOM = 1.25  # leave room for caches a trainer writes next to the labels
POLICY_KEY = "policy"  # secure_data.handoff.from_stage.POLICY_KEY: the deployment policy digest in ``upstream``


class PackagePolicyError(PackageError):
    """The package was made under a deployment policy this trainer does not allow (or under none)."""


@dataclass(frozen=True)
class OpenedPackage:
    """A decrypted, fully verified package; usable wherever a path is (``os.fspath`` gives ``path``)."""

    path: Path  # dataset root: byte-identical copies of the packaged files
    data_yaml: Path | None  # training config with an absolute ``path:`` (None if the package has no data.yaml)
    scratch: Path  # the private directory holding both; gone after the ``with`` block
    info: PackageInfo

    @property
    def package_id(self) -> str:
        return self.info.package_id

    @property
    def manifest_digest(self) -> str:
        return self.info.manifest_digest

    def __fspath__(self) -> str:
        return str(self.path)


@contextlib.contextmanager
def open_package(
    uri: str | os.PathLike,
    key_service: KeyService,
    *,
    expected_package_id: str | None = None,
    expected_manifest_digest: str | None = None,
    scratch_parent: str | os.PathLike | None = None,
    storage_options: Mapping[str, Any] | None = None,
    allowed_policy_digests: Collection[str] | None = None,
) -> Iterator[OpenedPackage]:
    """Verify, unwrap, decrypt into private scratch, verify every file; wipe on exit.

    ``uri``: a local path / ``file://`` URI, or an object-storage URI (``s3://bucket/packages/<id>``;
    ``storage_options`` are fsspec options): its ciphertext is downloaded to a private staging folder
    first and verified exactly like a local package, then the staging folder is removed.
    ``allowed_policy_digests``: the deployment policy digests this trainer accepts (None: no check);
    checked on the signed manifest, before the data key is unwrapped.
    """
    if remote.is_remote(uri):
        with _downloaded(str(uri), storage_options) as local, open_package(
                local, key_service, expected_package_id=expected_package_id,
                expected_manifest_digest=expected_manifest_digest, scratch_parent=scratch_parent,
                allowed_policy_digests=allowed_policy_digests) as opened:
            yield replace(opened, info=replace(opened.info, uri=str(uri)))
        return
    verified = verify_package(package_path(uri), key_service, expected_package_id=expected_package_id,
                              expected_manifest_digest=expected_manifest_digest)
    if allowed_policy_digests is not None:
        check_policy(verified.manifest.upstream, verified.manifest.package_id, allowed_policy_digests)
    check_file_set(verified)  # cheap: refuse added/removed/truncated files before asking Vault for a key
    needed = sum(f.size for f in verified.manifest.files)
    scratch = make_private_scratch(scratch_parent, needed_bytes=needed)
    try:
        dataset = scratch / "dataset"
        dataset.mkdir(mode=0o700)
        key = unwrap_data_key(verified, key_service)
        try:
            for record in verified.manifest.files:
                _decrypt_into(dataset, verified, record, key)
        finally:
            del key
        data_yaml = None
        if any(f.path == DATA_YAML for f in verified.manifest.files):
            data_yaml = write_training_yaml(dataset, scratch / TRAINING_YAML)
        yield OpenedPackage(path=dataset, data_yaml=data_yaml, scratch=scratch, info=verified.info())
    finally:
        wipe_scratch(scratch)


def check_policy(upstream: Mapping[str, str], package_id: str, allowed: Collection[str]) -> str:
    """The package's (signed) deployment policy digest, if it is on ``allowed``; else say why not."""
    digest = upstream.get(POLICY_KEY)
    if not digest:
        raise PackagePolicyError(
            f"package {package_id} records no deployment policy digest (made by a sanitizer without a policy); "
            "this trainer accepts only packages made under an allowed policy")
    if digest not in set(allowed):
        shown = ", ".join(sorted(allowed)) or "nothing"
        raise PackagePolicyError(
            f"package {package_id} was sanitized under deployment policy {digest}, which is not on this trainer's "
            f"allow-list ({shown}; SECURE_DATA_TRAINER_POLICY_DIGESTS): refusing to decrypt it")
    return digest


@contextlib.contextmanager
def _downloaded(uri: str, storage_options: Mapping[str, Any] | None) -> Iterator[Path]:
    """The remote package's ciphertext in a private folder on local disk (it is encrypted; not tmpfs)."""
    staging = make_private_scratch(tempfile.gettempdir())
    try:
        yield remote.fetch_package(uri, staging, storage_options)
    finally:
        wipe_scratch(staging)


def _decrypt_into(dataset: Path, verified, record, key: bytes) -> None:
    rel = safe_relpath(record.path)
    target = dataset.joinpath(*rel.parts)
    target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    fd = os.open(target, flags, 0o600)
    with os.fdopen(fd, "wb") as out:
        decrypt_file_to(verified, record, key, out.write)


def make_private_scratch(parent: str | os.PathLike | None = None, *, needed_bytes: int = 0) -> Path:
    """A fresh directory only this user can enter: ``parent``, else /dev/shm if it fits, else the temp dir."""
    if parent is None:
        parent = _default_scratch_parent(needed_bytes)
    path = Path(tempfile.mkdtemp(prefix="secure-data-", dir=parent))  # mkdtemp creates it 0700
    mode = stat.S_IMODE(os.lstat(path).st_mode)
    if mode & 0o077:
        shutil.rmtree(path, ignore_errors=True)
        raise PermissionError(f"scratch directory {path} is not private (mode {mode:o})")
    return path


def _default_scratch_parent(needed_bytes: int) -> str:
    # RAM-backed: plaintext never reaches a disk (unless the system swaps), and wiping is just freeing pages.
    if SHM.is_dir() and os.access(SHM, os.W_OK | os.X_OK):
        vfs = os.statvfs(SHM)
        if vfs.f_bavail * vfs.f_frsize >= needed_bytes * _HEADROOM:
            return str(SHM)
    return tempfile.gettempdir()


def wipe_scratch(path: Path) -> None:
    """Remove the scratch tree. Files are unlinked, not overwritten: on tmpfs that frees the pages,
    and on SSDs an overwrite would not reach the old blocks anyway (see docs/handoff.md)."""
    def _retry_writable(func, failed_path, _exc):
        with contextlib.suppress(OSError):
            os.chmod(failed_path, 0o700)
            func(failed_path)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=_retry_writable)
    else:  # pragma: no cover - Python 3.11
        shutil.rmtree(path, onerror=_retry_writable)
    if path.exists():
        raise RuntimeError(f"could not wipe scratch directory {path}")


def write_training_yaml(dataset: Path, target: Path) -> Path:
    """A YOLO data config pointing at ``dataset`` with only the keys a trainer needs.

    Built from the package's verified ``data.yaml`` but whitelisting keys: Ultralytics
    would otherwise run a ``download:`` script, and relative ``path: .`` would resolve
    against its global datasets directory instead of the scratch space.
    """
    import yaml  # PyYAML ships with Airflow

    source = yaml.safe_load((dataset / DATA_YAML).read_text(encoding="utf-8")) or {}
    if not isinstance(source, Mapping):
        raise PackageFormatError(f"{DATA_YAML} is not a mapping")
    config: dict[str, Any] = {"path": str(dataset)}
    for split in _SPLITS:
        value = source.get(split)
        if value is None:
            continue
        entries = value if isinstance(value, list) else [value]
        for entry in entries:
            _check_split_path(dataset, split, entry)
        config[split] = value
    if "train" not in config:
        raise PackageFormatError(f"{DATA_YAML} names no train split")
    names = source.get("names")
    if not isinstance(names, list | dict) or not names:
        raise PackageFormatError(f"{DATA_YAML} has no class names")
    config["names"] = names
    if "nc" in source:
        config["nc"] = int(source["nc"])
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        yaml.safe_dump(config, fh, sort_keys=False)
    return target


def _check_split_path(dataset: Path, split: str, entry: Any) -> None:
    if not isinstance(entry, str):
        raise PackageFormatError(f"{DATA_YAML}: {split} entry {entry!r} is not a path")
    try:
        safe_relpath(entry.rstrip("/"))
    except UnsafePathError:
        raise PackageFormatError(
            f"{DATA_YAML}: {split} path {entry!r} is not a relative path inside the package") from None
    target = dataset / entry
    if not target.exists():
        raise PackageFormatError(f"{DATA_YAML}: {split} path {entry!r} is not in the package")
    if not target.is_dir() or target.is_symlink():
        # A list file ("train: list.txt") names images by path, and Ultralytics reads absolute ones
        # wherever they point on the trainer host: only directories inside the package are accepted.
        raise PackageFormatError(
            f"{DATA_YAML}: {split} path {entry!r} is a file (a list of image paths), not a directory of the "
            "package; list-file splits are refused")
