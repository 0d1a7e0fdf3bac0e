"""Building a hand-off package: encrypt every file (streaming AEAD), sign the manifest, publish atomically."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from secure_data.dataset.atomic import (
    NAME_MAX,
    atomic_directory,
    fsync_tree,
    sweep_partial_directories,
    temp_prefix,
)
from secure_data.dataset.layout import PATH_MAX, fits_under
from secure_data.dataset.manifest import IntegrityError, digest_of
from secure_data.handoff import attest, stream
from secure_data.handoff.format import (
    HEADER_FILE,
    MANIFEST_FILE,
    PackageFile,
    PackageFormatError,
    PackageHeader,
    PackageInfo,
    PackageManifest,
    SourceFile,
    WrappedKey,
    associated_data,
    check_package_id,
    check_paths,
    ciphertext_relpath,
    content_digest_of,
    model_signature_facts,
    new_package_id,
    package_uri,
    signing_statement,
)
from secure_data.handoff.keyservice import KeyService


def build_package(
    packages_root: str | os.PathLike,
    sources: Sequence[SourceFile],
    key_service: KeyService,
    *,
    name: str,
    upstream: Mapping[str, str] | None = None,
    package_id: str | None = None,
    chunk_size: int = stream.DEFAULT_CHUNK_SIZE,
    durable: bool = True,
    attestation_signer: attest.AttestationSigner | None = None,
) -> PackageInfo:
    """Encrypt ``sources`` under a fresh data key, sign the manifest, publish ``<root>/<package_id>``.

    The directory appears complete (rename) or not at all. Any error, including a
    source whose bytes differ from its recorded sha256, aborts the whole package.
    With ``attestation_signer`` the package also gets ``model.sig`` (OpenSSF model_signing).
    """
    package_id = check_package_id(package_id or new_package_id(name))
    upstream = {str(k): str(v) for k, v in (upstream or {}).items()}
    ordered = sorted(sources, key=lambda s: s.path)
    check_paths([s.path for s in ordered])
    _check_storable(Path(packages_root), package_id, [s.path for s in ordered])
    aead = {"construction": stream.CONSTRUCTION, "chunk_size": chunk_size}

    data_key = key_service.generate_data_key()
    try:
        wrapped = WrappedKey(key_name=data_key.key_name, key_version=int(data_key.key_version),
                             wrapped=data_key.wrapped)
        content_digest = content_digest_of(
            package_id=package_id, name=name, upstream=upstream, aead=aead, key_name=wrapped.key_name,
            files=[(s.path, s.sha256, s.size) for s in ordered],
        )
        final = Path(packages_root) / package_id
        # A killed earlier try of this same package left its half-built ciphertext behind: remove it.
        sweep_partial_directories(final)
        with atomic_directory(final) as tmp:
            # Durability once for the whole tree (below), not an fsync per file: see fsync_tree.
            records = tuple(
                _encrypt_source(tmp, src, data_key.plaintext, package_id, content_digest, chunk_size)
                for src in ordered
            )
            manifest = PackageManifest(
                package_id=package_id, name=name,
                created_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                upstream=upstream, aead=aead, key_name=wrapped.key_name,
                content_digest=content_digest, files=records,
            )
            manifest_bytes = manifest.encode()
            manifest_digest = digest_of(manifest_bytes)
            signature = key_service.sign(signing_statement(package_id, manifest_digest))
            header = PackageHeader(package_id=package_id, manifest_digest=manifest_digest,
                                   signature=signature, data_key=wrapped)
            _write_new(tmp / MANIFEST_FILE, manifest_bytes)
            _write_new(tmp / HEADER_FILE, header.encode())
            signatures: dict[str, Any] = {"manifest": {"key_version": key_service.key_version(signature)}}
            if attestation_signer is not None:
                # Over the bytes just written: the manifest, and every ciphertext by its recorded digest.
                files = [(MANIFEST_FILE, manifest_digest.removeprefix("sha256:"))]
                files += [(ciphertext_relpath(r.path), r.ciphertext_sha256) for r in records]
                sig = attest.write_package_signature(tmp, files, attestation_signer, name=package_id,
                                                     unsigned=[HEADER_FILE])
                signatures["model_signing"] = model_signature_facts(sig)
            if durable:  # every byte on disk before the rename publishes the package
                fsync_tree(tmp)
    finally:
        # Python cannot zero an immutable bytes object; dropping the last reference is what we can do.
        del data_key
    return PackageInfo(
        uri=package_uri(final), package_id=package_id, name=name, manifest_digest=manifest_digest,
        content_digest=content_digest, key_name=wrapped.key_name, key_version=wrapped.key_version,
        counts=manifest.counts(), upstream=upstream, signatures=signatures,
    )


def _check_storable(packages_root: Path, package_id: str, paths: Sequence[str]) -> None:
    """Refuse, before a data key is made or a byte written, a path whose ciphertext file cannot be created.

    ``data/<path>.enc`` is 4 bytes longer than the path's own name, and the package is built under
    ``atomic_directory``'s temporary name: a legal 252..255-byte file name, or a deep path, would
    otherwise fail with a bare ``OSError: File name too long`` half-way through the build.
    """
    building = packages_root / f"{temp_prefix(package_id, '.partial')}{'x' * 8}.partial"
    for path in paths:
        rel = ciphertext_relpath(path)
        if not fits_under(building, rel, suffix_budget=0):
            name = len(os.fsencode(rel.rsplit("/", 1)[-1]))
            raise PackageFormatError(
                f"{path!r} cannot be packaged: its ciphertext file name is {name} bytes (NAME_MAX {NAME_MAX}) "
                f"or its path under {os.fspath(packages_root)!r} is longer than PATH_MAX {PATH_MAX}; the "
                "integrity stage quarantines such names (path_too_long)")


def _encrypt_source(tmp: Path, src: SourceFile, key: bytes, package_id: str, content_digest: str,
                    chunk_size: int) -> PackageFile:
    target = tmp / ciphertext_relpath(src.path)
    target.parent.mkdir(parents=True, exist_ok=True)
    ad = associated_data(package_id, src.path, content_digest)
    with open(target, "xb") as out:
        if src.read is not None:
            data = src.read()
            if len(data) != src.size:
                raise IntegrityError(f"{src.path}: read {len(data)} bytes, manifest says {src.size}")
            result = stream.encrypt_bytes(key, ad, data, out, chunk_size=chunk_size, hash_plaintext=False)
            plain_sha = src.sha256  # the reader verified these exact bytes
        else:
            assert src.open is not None
            with src.open() as reader:
                result = stream.encrypt_file(key, ad, reader, out, chunk_size=chunk_size)
            plain_sha = result.plaintext_sha256
            if plain_sha != src.sha256 or result.plaintext_size != src.size:
                raise IntegrityError(
                    f"{src.path}: sha256 {plain_sha} ({result.plaintext_size} bytes) does not match "
                    f"manifest {src.sha256} ({src.size} bytes)")
    return PackageFile(path=src.path, sha256=plain_sha, size=result.plaintext_size,
                       ciphertext_sha256=result.ciphertext_sha256, ciphertext_size=result.ciphertext_size,
                       kind=src.kind)


def _write_new(path: Path, data: bytes) -> None:
    with open(path, "xb") as fh:
        fh.write(data)


def sources_from_directory(root: str | os.PathLike) -> list[SourceFile]:
    """Every regular file under ``root`` as a streamed source (hashed now, re-checked while encrypting).

    For ad-hoc packaging, tests and benchmarks; the pipeline builds from a stage manifest.
    """
    from secure_data.dataset.layout import classify, resolve_inside, walk_dataset

    out: list[SourceFile] = []
    for entry in walk_dataset(root):
        if not entry.is_regular or entry.is_symlink:
            raise PackageFormatError(f"{entry.relpath}: not a regular file; refusing to package it")
        full = resolve_inside(root, entry.relpath)
        sha, size = _hash_file(full)
        out.append(SourceFile(path=entry.relpath, sha256=sha, size=size, kind=classify(entry.relpath)[0],
                              open=_opener(full)))
    return out


def _opener(path: Path) -> Callable[[], BinaryIO]:
    return lambda: open(path, "rb", opener=lambda p, f: os.open(p, f | getattr(os, "O_NOFOLLOW", 0)))


def _hash_file(path: Path) -> tuple[str, int]:
    import hashlib

    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
            size += len(chunk)
    return h.hexdigest(), size


