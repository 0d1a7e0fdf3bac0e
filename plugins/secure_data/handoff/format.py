"""The hand-off package format: names, errors, records, pure helpers (see ``handoff.package``)."""

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

from secure_data.dataset.layout import UnsafePathError, safe_relpath
from secure_data.dataset.manifest import canonical_json, digest_of
from secure_data.handoff import attest

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


# --- shared by the builder and the verifier ---------------------------------------------------


def model_signature_facts(path: str | os.PathLike) -> dict[str, Any]:
    """Non-secret facts of a ``model.sig``: file, its digest, and the key version its keyid names (unverified)."""
    raw = read_regular(Path(path))
    facts: dict[str, Any] = {"file": attest.SIGNATURE_FILE, "digest": digest_of(raw)}
    try:
        keyid = json.loads(raw)["dsseEnvelope"]["signatures"][0]["keyid"]
        _, name, version = keyid.rsplit(":", 2)
        facts.update(key_name=name, key_version=int(version.lstrip("v")))
    except (ValueError, KeyError, IndexError, TypeError):
        pass
    return facts


def check_paths(paths: Sequence[str]) -> None:
    seen: set[str] = set()
    for path in paths:
        try:
            safe_relpath(path)
        except UnsafePathError as exc:
            raise PackageFormatError(str(exc)) from None
        if path in seen:
            raise PackageFormatError(f"duplicate path {path!r}")
        seen.add(path)


def read_regular(path: Path) -> bytes:
    with open(path, "rb", opener=nofollow) as fh:
        return fh.read()


def nofollow(path: str, flags: int) -> int:
    return os.open(path, flags | getattr(os, "O_NOFOLLOW", 0))
