"""Key lifecycle of published packages: rewrap to the newest key version; crypto-shredding.

Rewrap: Transit ``rewrap`` turns a wrapped data key into one wrapped under the
newest version of the same Transit key without ever returning the plaintext. Only
``header.json`` changes (it is outside the signed part), so the ciphertexts and the
signature stay valid and the package opens as before. After every package is
rewrapped, an operator may raise the key's ``min_decryption_version`` so that older
key versions (and any copy of an old header) stop working.

Crypto-shredding: a package can only be decrypted with its data key, and its data
key exists only wrapped by the Transit key named in the header. Deleting that Transit
key (``deletion_allowed=true`` then ``DELETE transit/keys/<name>``) therefore makes
every package under it permanently unreadable, wherever copies of it are stored.
See docs/handoff.md for the procedure.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from secure_data.dataset.atomic import atomic_write_bytes
from secure_data.handoff.keyservice import KeyService
from secure_data.handoff.package import (
    HEADER_FILE,
    PackageHeader,
    PackageKeyError,
    WrappedKey,
    package_path,
    read_header,
)


@dataclass(frozen=True)
class RewrapResult:
    package_id: str
    key_name: str
    old_version: int
    new_version: int

    @property
    def changed(self) -> bool:
        return self.new_version != self.old_version


def rewrap_package(uri: str | os.PathLike, key_service: KeyService) -> RewrapResult:
    """Rewrap the package's data key to the newest Transit key version; rewrite ``header.json`` atomically.

    Needs only Transit ``rewrap`` permission (the keyadmin or sanitizer identity):
    no plaintext key is involved. Idempotent: a header already at the newest
    version is rewritten with an equivalent wrapped key.
    """
    root = package_path(uri)
    header = read_header(root)
    try:
        rewrapped = key_service.rewrap(header.data_key.wrapped)
    except Exception as exc:
        raise PackageKeyError(
            f"cannot rewrap the data key of package {header.package_id!r} (Transit key "
            f"{header.data_key.key_name!r}): {type(exc).__name__}: {exc}") from exc
    new_version = key_service.key_version(rewrapped)
    if new_version is None:
        raise PackageKeyError(f"the key service's rewrapped data key of package {header.package_id!r} names no "
                              "key version")
    updated = PackageHeader(
        package_id=header.package_id, manifest_digest=header.manifest_digest, signature=header.signature,
        data_key=WrappedKey(key_name=header.data_key.key_name, key_version=new_version, wrapped=rewrapped),
    )
    atomic_write_bytes(Path(root) / HEADER_FILE, updated.encode())
    return RewrapResult(package_id=header.package_id, key_name=header.data_key.key_name,
                        old_version=header.data_key.key_version, new_version=new_version)


def rewrap_all(packages_root: str | os.PathLike, key_service: KeyService) -> list[RewrapResult]:
    """Rewrap every published package under ``packages_root`` (directories with a header.json)."""
    results = []
    for child in sorted(Path(packages_root).iterdir()):
        if child.is_dir() and not child.is_symlink() and (child / HEADER_FILE).is_file() \
                and not child.name.startswith("."):
            results.append(rewrap_package(child, key_service))
    return results
