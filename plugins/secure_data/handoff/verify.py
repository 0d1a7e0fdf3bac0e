"""Reading and verifying a hand-off package: signature, manifest, ids, file set; decrypting one file."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from secure_data.dataset.manifest import digest_of
from secure_data.handoff import attest, stream
from secure_data.handoff.format import (
    HEADER_FILE,
    MANIFEST_FILE,
    PackageFile,
    PackageFormatError,
    PackageHeader,
    PackageInfo,
    PackageIntegrityError,
    PackageKeyError,
    PackageManifest,
    PackageSignatureError,
    associated_data,
    check_paths,
    ciphertext_relpath,
    content_digest_of,
    model_signature_facts,
    nofollow,
    package_uri,
    read_regular,
    signing_statement,
)
from secure_data.handoff.keyservice import KeyService


@dataclass(frozen=True)
class VerifiedPackage:
    """A package whose signature, manifest and header were checked (ciphertexts not yet)."""

    root: Path
    header: PackageHeader
    manifest: PackageManifest
    signature_key_version: int | None = None  # as the key service reads its own signature

    @property
    def package_id(self) -> str:
        return self.header.package_id

    def info(self) -> PackageInfo:
        signatures: dict[str, Any] = {"manifest": {"key_version": self.signature_key_version}}
        if (self.root / attest.SIGNATURE_FILE).is_file():
            signatures["model_signing"] = model_signature_facts(self.root / attest.SIGNATURE_FILE)
        return PackageInfo(
            uri=package_uri(self.root), package_id=self.package_id, name=self.manifest.name,
            manifest_digest=self.header.manifest_digest, content_digest=self.manifest.content_digest,
            key_name=self.header.data_key.key_name, key_version=self.header.data_key.key_version,
            counts=self.manifest.counts(), upstream=self.manifest.upstream, signatures=signatures,
        )


def read_header(root: str | os.PathLike) -> PackageHeader:
    path = Path(root) / HEADER_FILE
    try:
        raw = read_regular(path)
    except FileNotFoundError:
        raise PackageFormatError(f"{root}: no {HEADER_FILE}; not a package (or not published completely)") from None
    return PackageHeader.parse(raw)


def verify_package(
    root: str | os.PathLike,
    key_service: KeyService,
    *,
    expected_package_id: str | None = None,
    expected_manifest_digest: str | None = None,
) -> VerifiedPackage:
    """Check signature (trusted key), manifest digest, ids and the content digest; no decryption."""
    root = Path(root)
    header = read_header(root)
    try:
        manifest_bytes = read_regular(root / MANIFEST_FILE)
    except FileNotFoundError:
        raise PackageIntegrityError(MANIFEST_FILE, "missing") from None
    actual = digest_of(manifest_bytes)
    if actual != header.manifest_digest:
        raise PackageSignatureError(
            f"{MANIFEST_FILE} was modified: its digest {actual} differs from the signed {header.manifest_digest}")
    if not key_service.verify(signing_statement(header.package_id, header.manifest_digest), header.signature):
        raise PackageSignatureError(
            f"package {header.package_id!r}: signature is not valid under the trusted signing key "
            "(signed by another key, or the header was edited)")
    manifest = PackageManifest.parse(manifest_bytes)
    if manifest.package_id != header.package_id:
        raise PackageSignatureError(
            f"manifest is for package {manifest.package_id!r}, header says {header.package_id!r}")
    if root.name != header.package_id:
        raise PackageSignatureError(
            f"package {header.package_id!r} was found under another id {root.name!r} (replayed or renamed)")
    if expected_package_id is not None and header.package_id != expected_package_id:
        raise PackageSignatureError(
            f"expected package {expected_package_id!r}, got {header.package_id!r} (replayed package)")
    if expected_manifest_digest is not None and header.manifest_digest != expected_manifest_digest:
        raise PackageSignatureError(
            f"expected manifest digest {expected_manifest_digest}, package has {header.manifest_digest}")
    if header.data_key.key_name != manifest.key_name:
        raise PackageSignatureError(
            f"header data key {header.data_key.key_name!r} is not the signed key {manifest.key_name!r}")
    if key_service.key_version(header.data_key.wrapped) != header.data_key.key_version:
        raise PackageFormatError(f"{HEADER_FILE}: key_version does not match the wrapped key")
    if manifest.aead.get("construction") != stream.CONSTRUCTION:
        raise PackageFormatError(f"unsupported AEAD construction {manifest.aead.get('construction')!r}")
    recomputed = content_digest_of(
        package_id=manifest.package_id, name=manifest.name, upstream=manifest.upstream, aead=manifest.aead,
        key_name=manifest.key_name, files=[(f.path, f.sha256, f.size) for f in manifest.files],
    )
    if recomputed != manifest.content_digest:
        raise PackageSignatureError("manifest content_digest does not match its file list")
    check_paths([f.path for f in manifest.files])
    return VerifiedPackage(root=root, header=header, manifest=manifest,
                           signature_key_version=key_service.key_version(header.signature))


def check_file_set(verified: VerifiedPackage) -> None:
    """Every signed file present as a regular file, nothing else in the package (no symlinks)."""
    root = verified.root
    expected = {ciphertext_relpath(f.path) for f in verified.manifest.files}
    found: set[str] = set()
    for entry in _walk(root):
        rel = entry.relative_to(root).as_posix()
        if rel in (HEADER_FILE, MANIFEST_FILE, attest.SIGNATURE_FILE):
            continue
        if entry.is_symlink() or not entry.is_file():
            raise PackageIntegrityError(rel, "not a regular file (symlink or special file) in the package")
        if rel not in expected:
            raise PackageIntegrityError(rel, "file is not in the signed manifest (added)")
        found.add(rel)
    for missing in sorted(expected - found):
        raise PackageIntegrityError(missing, "listed in the signed manifest but missing (removed)")
    for record in verified.manifest.files:
        rel = ciphertext_relpath(record.path)
        size = os.lstat(root / rel).st_size
        if size != record.ciphertext_size:
            raise PackageIntegrityError(
                rel, f"ciphertext is {size} bytes, the signed manifest says {record.ciphertext_size} (truncated "
                "or modified)")


def _walk(root: Path) -> list[Path]:
    found: list[Path] = []
    stack = [root]
    while stack:
        directory = stack.pop()
        with os.scandir(directory) as it:
            for entry in it:
                path = Path(entry.path)
                if entry.is_dir(follow_symlinks=False):
                    stack.append(path)
                else:
                    found.append(path)
    return sorted(found)


def unwrap_data_key(verified: VerifiedPackage, key_service: KeyService) -> bytes:
    """Plaintext data key of a verified package (memory only). Errors name the package and key, never material."""
    try:
        key = key_service.unwrap(verified.header.data_key.wrapped)
    except Exception as exc:
        raise PackageKeyError(
            f"cannot unwrap the data key of package {verified.package_id!r} (Transit key "
            f"{verified.header.data_key.key_name!r} v{verified.header.data_key.key_version}): "
            f"{type(exc).__name__}: {exc}") from exc
    if len(key) != 32:
        raise PackageKeyError(f"unwrapped data key of package {verified.package_id!r} is not 32 bytes")
    return key


def decrypt_file_to(verified: VerifiedPackage, record: PackageFile, key: bytes,
                    write: Callable[[bytes], object]) -> None:
    """Decrypt one file, checking ciphertext and plaintext digests against the signed manifest."""
    rel = ciphertext_relpath(record.path)
    ad = associated_data(verified.package_id, record.path, verified.manifest.content_digest)
    try:
        with open(verified.root / rel, "rb", opener=nofollow) as fh:
            result = stream.decrypt_file(key, ad, fh, write,
                                         expected_chunk_size=int(verified.manifest.aead["chunk_size"]))
    except stream.StreamError as exc:
        raise PackageIntegrityError(rel, f"decryption failed: {exc}") from None
    except FileNotFoundError:
        raise PackageIntegrityError(rel, "listed in the signed manifest but missing (removed)") from None
    if result.ciphertext_sha256 != record.ciphertext_sha256 or result.ciphertext_size != record.ciphertext_size:
        raise PackageIntegrityError(rel, "ciphertext sha256 differs from the signed manifest")
    if result.plaintext_sha256 != record.sha256 or result.plaintext_size != record.size:
        raise PackageIntegrityError(record.path, "decrypted sha256 differs from the signed manifest")


