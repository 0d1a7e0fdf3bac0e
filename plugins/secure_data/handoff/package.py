"""The hand-off package: format, builder and verifier (no Airflow, no Vault client: a ``KeyService``).

The public API lives here; the code in ``format.py``, ``build.py`` and ``verify.py``.

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

# The public API, from the modules that implement it: format (names, records, pure helpers),
# build (encrypt, sign, publish) and verify (check, unwrap, decrypt).
from secure_data.handoff.build import build_package, sources_from_directory
from secure_data.handoff.format import (
    AD_SCHEMA,
    CIPHERTEXT_SUFFIX,
    DATA_DIR,
    HEADER_FILE,
    HEADER_SCHEMA,
    MANIFEST_FILE,
    MANIFEST_SCHEMA,
    SIGNATURE_SCHEMA,
    PackageError,
    PackageFile,
    PackageFormatError,
    PackageHeader,
    PackageInfo,
    PackageIntegrityError,
    PackageKeyError,
    PackageManifest,
    PackageSignatureError,
    SourceFile,
    WrappedKey,
    associated_data,
    check_package_id,
    ciphertext_relpath,
    content_digest_of,
    model_signature_facts,
    new_package_id,
    package_path,
    package_uri,
    signing_statement,
)
from secure_data.handoff.verify import (
    VerifiedPackage,
    check_file_set,
    decrypt_file_to,
    read_header,
    unwrap_data_key,
    verify_package,
)

__all__ = [
    "AD_SCHEMA", "CIPHERTEXT_SUFFIX", "DATA_DIR", "HEADER_FILE", "HEADER_SCHEMA", "MANIFEST_FILE", "MANIFEST_SCHEMA",
    "SIGNATURE_SCHEMA", "PackageError", "PackageFile", "PackageFormatError", "PackageHeader", "PackageInfo",
    "PackageIntegrityError", "PackageKeyError", "PackageManifest", "PackageSignatureError", "SourceFile",
    "VerifiedPackage", "WrappedKey", "associated_data", "build_package", "check_file_set", "check_package_id",
    "ciphertext_relpath", "content_digest_of", "decrypt_file_to", "model_signature_facts", "new_package_id",
    "package_path", "package_uri", "read_header", "signing_statement", "sources_from_directory", "unwrap_data_key",
    "verify_package",
]
