"""The hand-off package: format, builder and verifier (no Airflow, no Vault client: a ``KeyService``).

A package is one directory, published atomically (complete or absent)::

    <packages_root>/<package_id>/
        header.json        unsigned envelope: wrapped data key + key version, manifest digest, signature
        manifest.jsonl     the signed manifest (canonical JSON Lines, see below)
        data/<path>.enc    one streaming-AEAD ciphertext per file (``secure_data.handoff.stream``)
        model.sig          OpenSSF model_signing signature of manifest.jsonl and every data/ file
                           (``secure_data.handoff.attest``; verifiable with ``model_signing verify key``)

``manifest.jsonl``: line 1 is the header object (schema, package id, name, upstream
manifest digests, AEAD parameters, data-key name, ``content_digest``, counts), then one
record per file sorted by path: ``path``, ``sha256``/``size`` of the plaintext,
``ciphertext_sha256``/``ciphertext_size``, ``kind``.

``content_digest`` is the SHA-256 of the canonical *plaintext side* of the manifest
(package id, name, upstream digests, AEAD parameters, data-key name, and every
file's path, sha256 and size). It is computable before anything is encrypted, so it
can go into every file's associated data (with the package id and the path); the
full manifest, which also lists ciphertext digests, is what gets signed.

The signature (Transit, ed25519) covers ``signing_statement(package_id, manifest
digest)``. The wrapped data key and its version are deliberately *outside* the signed
part, so a key rotation can rewrap them (``lifecycle.rewrap_package``) without
re-signing; the signed manifest pins the data-key *name*, and a wrong wrapped key
cannot yield a key that authenticates the signed ciphertexts (see docs/handoff.md).
"""

from __future__ import annotations

import json
import os
import re
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from secure_data.dataset.atomic import (
    NAME_MAX,
    atomic_directory,
    fsync_tree,
    sweep_partial_directories,
    temp_prefix,
)
from secure_data.dataset.layout import PATH_MAX, UnsafePathError, fits_under, safe_relpath
from secure_data.dataset.manifest import IntegrityError, canonical_json, digest_of
from secure_data.handoff import attest, stream
from secure_data.handoff.keyservice import KeyService

HEADER_FILE = "header.json"
MANIFEST_FILE = "manifest.jsonl"
DATA_DIR = "data"
CIPHERTEXT_SUFFIX = ".enc"
HEADER_SCHEMA = "secure-data/package-header/v1"
MANIFEST_SCHEMA = "secure-data/package-manifest/v1"
SIGNATURE_SCHEMA = "secure-data/package-signature/v1"
AD_SCHEMA = "secure-data/package-file/v1"
_PACKAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class PackageError(Exception):
    """Base class: the package cannot be trusted or used. Messages never contain key material."""


class PackageFormatError(PackageError):
    """A header or manifest that does not parse, has the wrong schema or inconsistent fields."""


class PackageSignatureError(PackageError):
    """The signed manifest was edited, or the signature is not valid under the trusted key."""


class PackageIntegrityError(PackageError):
    """A file of the package is missing, extra, truncated, swapped or modified. ``path`` names it."""

    def __init__(self, path: str, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


class PackageKeyError(PackageError):
    """The data key cannot be unwrapped (no permission, key deleted: crypto-shredded, sealed Vault)."""


@dataclass(frozen=True)
class SourceFile:
    """A plaintext file to package. Exactly one of ``read`` / ``open`` is set.

    ``read`` returns the bytes *already checked* against ``sha256`` (``verified_read``);
    ``open`` returns a binary stream that the builder hashes while encrypting and
    rejects (aborting the package) if it does not match.
    """

    path: str
    sha256: str
    size: int
    kind: str = "other"
    read: Callable[[], bytes] | None = field(default=None, compare=False)
    open: Callable[[], BinaryIO] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if (self.read is None) == (self.open is None):
            raise ValueError(f"{self.path}: give exactly one of read= or open=")


@dataclass(frozen=True)
class PackageFile:
    """One file as the signed manifest records it."""

    path: str
    sha256: str
    size: int
    ciphertext_sha256: str
    ciphertext_size: int
    kind: str = "other"

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": self.path, "sha256": self.sha256, "size": self.size,
            "ciphertext_sha256": self.ciphertext_sha256, "ciphertext_size": self.ciphertext_size,
            "kind": self.kind,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PackageFile:
        return cls(
            path=str(data["path"]), sha256=str(data["sha256"]), size=int(data["size"]),
            ciphertext_sha256=str(data["ciphertext_sha256"]), ciphertext_size=int(data["ciphertext_size"]),
            kind=str(data.get("kind", "other")),
        )


@dataclass(frozen=True)
class WrappedKey:
    """The data key as stored: Transit ciphertext (safe to store) plus the key name and version."""

    key_name: str
    key_version: int
    wrapped: str = field(repr=False)


@dataclass(frozen=True)
class PackageHeader:
    """``header.json``: the mutable, unsigned envelope of a package."""

    package_id: str
    manifest_digest: str
    signature: str = field(repr=False)
    data_key: WrappedKey

    def encode(self) -> bytes:
        body = {
            "schema": HEADER_SCHEMA,
            "package_id": self.package_id,
            "manifest_digest": self.manifest_digest,
            "signature": self.signature,
            "data_key": {
                "key_name": self.data_key.key_name,
                "key_version": self.data_key.key_version,
                "wrapped": self.data_key.wrapped,
            },
        }
        return (json.dumps(body, sort_keys=True, indent=2) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, raw: bytes) -> PackageHeader:
        try:
            body = json.loads(raw.decode("utf-8"))
            if body.get("schema") != HEADER_SCHEMA:
                raise PackageFormatError(f"{HEADER_FILE} has schema {body.get('schema')!r}, expected {HEADER_SCHEMA!r}")
            key = body["data_key"]
            return cls(
                package_id=str(body["package_id"]),
                manifest_digest=str(body["manifest_digest"]),
                signature=str(body["signature"]),
                data_key=WrappedKey(key_name=str(key["key_name"]), key_version=int(key["key_version"]),
                                    wrapped=str(key["wrapped"])),
            )
        except PackageFormatError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise PackageFormatError(f"{HEADER_FILE} is not a valid package header: {exc!r}") from None


@dataclass(frozen=True)
class PackageManifest:
    """The signed part of a package."""

    package_id: str
    name: str
    created_at: str
    upstream: Mapping[str, str]
    aead: Mapping[str, Any]
    key_name: str
    content_digest: str
    files: tuple[PackageFile, ...]

    def counts(self) -> dict[str, int]:
        return {
            "files": len(self.files),
            "images": sum(f.kind == "image" for f in self.files),
            "labels": sum(f.kind == "label" for f in self.files),
            "bytes": sum(f.size for f in self.files),
            "ciphertext_bytes": sum(f.ciphertext_size for f in self.files),
        }

    def encode(self) -> bytes:
        head = {
            "schema": MANIFEST_SCHEMA,
            "package_id": self.package_id,
            "name": self.name,
            "created_at": self.created_at,
            "upstream": dict(self.upstream),
            "aead": dict(self.aead),
            "key_name": self.key_name,
            "content_digest": self.content_digest,
            "counts": self.counts(),
        }
        lines = [canonical_json(head)] + [canonical_json(f.to_dict()) for f in self.files]
        return ("\n".join(lines) + "\n").encode("utf-8")

    @classmethod
    def parse(cls, raw: bytes) -> PackageManifest:
        try:
            lines = [line for line in raw.decode("utf-8").split("\n") if line]
            head = json.loads(lines[0])
            if head.get("schema") != MANIFEST_SCHEMA:
                raise PackageFormatError(
                    f"{MANIFEST_FILE} has schema {head.get('schema')!r}, expected {MANIFEST_SCHEMA!r}")
            files = tuple(PackageFile.from_dict(json.loads(line)) for line in lines[1:])
            manifest = cls(
                package_id=str(head["package_id"]), name=str(head["name"]), created_at=str(head["created_at"]),
                upstream={str(k): str(v) for k, v in head["upstream"].items()}, aead=dict(head["aead"]),
                key_name=str(head["key_name"]), content_digest=str(head["content_digest"]), files=files,
            )
        except PackageFormatError:
            raise
        except (ValueError, KeyError, TypeError, AttributeError, IndexError) as exc:
            raise PackageFormatError(f"{MANIFEST_FILE} is not a valid package manifest: {exc!r}") from None
        paths = [f.path for f in files]
        if paths != sorted(set(paths)):
            raise PackageFormatError(f"{MANIFEST_FILE} records are not sorted and unique by path")
        return manifest


@dataclass(frozen=True)
class PackageInfo:
    """Non-secret facts about a published package: what XCom and the Asset event carry."""

    uri: str
    package_id: str
    name: str
    manifest_digest: str
    content_digest: str
    key_name: str
    key_version: int
    counts: Mapping[str, int]
    upstream: Mapping[str, str]
    # Which signing-key versions signed it (non-secret): {"manifest": {...}, "model_signing": {...}}.
    signatures: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "package_uri": self.uri, "package_id": self.package_id, "name": self.name,
            "manifest_digest": self.manifest_digest, "content_digest": self.content_digest,
            "key_name": self.key_name, "key_version": self.key_version,
            "counts": dict(self.counts), "upstream": dict(self.upstream), "signatures": dict(self.signatures),
        }


# --- small pure helpers -------------------------------------------------------------------------


def new_package_id(name: str = "pkg") -> str:
    """``<name>-<UTC time>-<16 random hex>``: sortable, unique, filesystem-safe."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64].lstrip("._-") or "pkg"
    return f"{safe}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}-{secrets.token_hex(8)}"


def check_package_id(package_id: str) -> str:
    if not _PACKAGE_ID.match(package_id) or package_id in (".", ".."):
        raise PackageFormatError(f"invalid package id {package_id!r}")
    return package_id


def content_digest_of(*, package_id: str, name: str, upstream: Mapping[str, str], aead: Mapping[str, Any],
                      key_name: str, files: Iterable[tuple[str, str, int]]) -> str:
    """Digest of the plaintext side of the manifest (computable before encryption)."""
    body = {
        "schema": MANIFEST_SCHEMA, "package_id": package_id, "name": name, "upstream": dict(upstream),
        "aead": dict(aead), "key_name": key_name,
        "files": [[path, sha, size] for path, sha, size in sorted(files)],
    }
    return digest_of(canonical_json(body).encode("utf-8"))


def associated_data(package_id: str, path: str, content_digest: str) -> bytes:
    """The AEAD associated data of one file: binds it to this package, this path and this content list."""
    return canonical_json({"schema": AD_SCHEMA, "package_id": package_id, "path": path,
                           "content_digest": content_digest}).encode("utf-8")


def signing_statement(package_id: str, manifest_digest: str) -> bytes:
    """What Transit signs: short, domain-separated, and naming the package id and the manifest digest."""
    return canonical_json({"schema": SIGNATURE_SCHEMA, "package_id": package_id,
                           "manifest_digest": manifest_digest}).encode("utf-8")


def ciphertext_relpath(path: str) -> str:
    return f"{DATA_DIR}/{path}{CIPHERTEXT_SUFFIX}"


def package_uri(path: str | os.PathLike) -> str:
    return Path(path).resolve().as_uri()


def package_path(uri: str | os.PathLike) -> Path:
    """Local directory of a package from a ``file://`` URI or a plain path."""
    text = os.fspath(uri)
    if "://" in text:
        from urllib.parse import unquote, urlsplit

        parts = urlsplit(text)
        if parts.scheme != "file" or parts.netloc not in ("", "localhost"):
            raise PackageFormatError(
                f"unsupported package URI {text!r}: only local file:// URIs or paths are supported")
        return Path(unquote(parts.path))
    return Path(text)


# --- building -----------------------------------------------------------------------------------


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
    _check_paths([s.path for s in ordered])
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


def model_signature_facts(path: str | os.PathLike) -> dict[str, Any]:
    """Non-secret facts of a ``model.sig``: file, its digest, and the key version its keyid names (unverified)."""
    raw = _read_regular(Path(path))
    facts: dict[str, Any] = {"file": attest.SIGNATURE_FILE, "digest": digest_of(raw)}
    try:
        keyid = json.loads(raw)["dsseEnvelope"]["signatures"][0]["keyid"]
        _, name, version = keyid.rsplit(":", 2)
        facts.update(key_name=name, key_version=int(version.lstrip("v")))
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    return facts


def _check_paths(paths: Sequence[str]) -> None:
    seen: set[str] = set()
    for path in paths:
        try:
            safe_relpath(path)
        except UnsafePathError as exc:
            raise PackageFormatError(str(exc)) from None
        if path in seen:
            raise PackageFormatError(f"duplicate path {path!r}")
        seen.add(path)


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


# --- reading and verifying ----------------------------------------------------------------------


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
        raw = _read_regular(path)
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
        manifest_bytes = _read_regular(root / MANIFEST_FILE)
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
    _check_paths([f.path for f in manifest.files])
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
        with open(verified.root / rel, "rb", opener=_nofollow) as fh:
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


def _read_regular(path: Path) -> bytes:
    with open(path, "rb", opener=_nofollow) as fh:
        return fh.read()


def _nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))
