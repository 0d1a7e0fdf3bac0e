"""Build a package from a stage's output (the anonymization stage's ``StageResult``).

The accepted records of the stage manifest are the package's files. Each file is
read once and checked against the manifest as it is read (``verified_read``; files
above ``stream_threshold`` are streamed and checked while encrypting, so memory stays
bounded and a mismatch aborts the package): the bytes that are encrypted are exactly
the bytes that were verified.
"""

from __future__ import annotations

import hashlib
import os
import re
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, BinaryIO

from secure_data.dataset.layout import DATA_YAML, open_inside
from secure_data.dataset.manifest import (
    FileRecord,
    Manifest,
    canonical_json,
    digest_of,
    read_manifest,
    verified_read,
)
from secure_data.dataset.stage import StageResult
from secure_data.handoff import remote, stream
from secure_data.handoff.attest import AttestationSigner
from secure_data.handoff.keyservice import KeyService
from secure_data.handoff.package import (
    PackageError,
    PackageFormatError,
    PackageInfo,
    SourceFile,
    build_package,
    check_package_id,
    verify_package,
)

DEFAULT_STREAM_THRESHOLD = 64 << 20  # files above this are streamed instead of read whole
# The effective deployment policy travels inside the package as a signed file, and its digests in the
# signed manifest's ``upstream`` map: "policy" (the deployment policy: what trainers allow-list) and
# "policy.effective" (that policy as tightened by the run).
POLICY_FILE = "secure-data-policy.json"
POLICY_KEY = "policy"
EFFECTIVE_POLICY_KEY = "policy.effective"


def upstream_digests(stage: StageResult, lineage: Sequence[StageResult] = ()) -> dict[str, str]:
    """``{stage: manifest digest}`` of the input stage and its lineage, plus any ``*_digest`` it reports
    in ``extra`` (e.g. the anonymization audit log) as ``<stage>.<key>``."""
    digests = {s.stage: s.manifest_digest for s in lineage}
    digests[stage.stage] = stage.manifest_digest
    for key, value in stage.extra.items():
        if key.endswith("_digest") and isinstance(value, str) and value.startswith("sha256:"):
            digests[f"{stage.stage}.{key}"] = value
    return digests


def derived_package_id(name: str, *parts: str) -> str:
    """A package id that is stable for the same (run, input): a retried task finds its own package."""
    digest = hashlib.sha256("\0".join(parts).encode("utf-8")).hexdigest()[:24]
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", name)[:64].lstrip("._-") or "pkg"
    return check_package_id(f"{safe}-{digest}")


def sources_from_manifest(manifest: Manifest, data_root: str | os.PathLike, *,
                          stream_threshold: int = DEFAULT_STREAM_THRESHOLD) -> list[SourceFile]:
    """Accepted records as package sources (quarantined ones stay out of the package)."""
    sources = []
    for record in manifest.records:
        if not record.accepted:
            continue
        if record.size > stream_threshold:
            sources.append(SourceFile(path=record.path, sha256=record.sha256, size=record.size, kind=record.kind,
                                      open=_stream_opener(data_root, record)))
        else:
            sources.append(SourceFile(path=record.path, sha256=record.sha256, size=record.size, kind=record.kind,
                                      read=partial(verified_read, data_root, record)))
    return sources


def _policy_source(policy: Mapping[str, Any], sources: Sequence[SourceFile]) -> SourceFile:
    if any(s.path == POLICY_FILE for s in sources):
        raise PackageFormatError(f"the dataset has a file named {POLICY_FILE!r}, which the package reserves")
    data = (canonical_json(policy) + "\n").encode("utf-8")
    return SourceFile(path=POLICY_FILE, sha256=hashlib.sha256(data).hexdigest(), size=len(data), kind="policy",
                      read=lambda: data)


def _stream_opener(root: str | os.PathLike, record: FileRecord) -> Callable[[], BinaryIO]:
    def _open() -> BinaryIO:
        return os.fdopen(open_inside(root, record.path), "rb")  # dir fds: no window between check and open

    return _open


def package_stage(
    stage: StageResult,
    packages_root: str | os.PathLike,
    key_service: KeyService,
    *,
    name: str,
    package_id: str | None = None,
    lineage: Sequence[StageResult] = (),
    chunk_size: int = stream.DEFAULT_CHUNK_SIZE,
    stream_threshold: int = DEFAULT_STREAM_THRESHOLD,
    storage_options: Mapping[str, Any] | None = None,
    staging_dir: str | os.PathLike | None = None,
    policy: Mapping[str, Any] | None = None,
    attestation_signer: AttestationSigner | None = None,
) -> PackageInfo:
    """Package the accepted files of ``stage``; reuse an already published package of the same id and input.

    ``packages_root`` may be an object-storage URI (``s3://bucket/packages``): the package is built
    in ``staging_dir`` (default: the temp dir), uploaded with its header last, and the staging copy
    removed; ``storage_options`` are fsspec options (credentials). ``policy``: the effective deployment
    policy document (``secure_data.policy.effective_document``), signed into the package.
    """
    manifest = read_manifest(stage.manifest_path, expected_digest=stage.manifest_digest)
    sources = sources_from_manifest(manifest, stage.data_root, stream_threshold=stream_threshold)
    if not any(s.path == DATA_YAML for s in sources):
        raise PackageFormatError(f"stage {stage.stage!r} has no accepted {DATA_YAML}: a training package needs one")
    if not any(s.kind == "image" for s in sources):
        raise PackageFormatError(f"stage {stage.stage!r} has no accepted images: nothing to hand off")
    upstream = upstream_digests(stage, lineage)
    if policy is not None:
        sources.append(_policy_source(policy, sources))
        upstream[POLICY_KEY] = str(policy["policy_digest"])
        upstream[EFFECTIVE_POLICY_KEY] = digest_of(canonical_json(policy).encode("utf-8"))
    if remote.is_remote(packages_root):
        return _package_remote(str(packages_root), sources, key_service, name=name, upstream=upstream,
                               package_id=package_id, chunk_size=chunk_size, storage_options=storage_options,
                               staging_dir=staging_dir, attestation_signer=attestation_signer)
    if package_id is not None:
        existing = Path(packages_root) / package_id
        if existing.exists():
            return _reuse(existing, key_service, upstream)
    return build_package(packages_root, sources, key_service, name=name, upstream=upstream,
                         package_id=package_id, chunk_size=chunk_size, attestation_signer=attestation_signer)


def _package_remote(packages_root: str, sources: Sequence[SourceFile], key_service: KeyService, *, name: str,
                    upstream: Mapping[str, str], package_id: str | None, chunk_size: int,
                    storage_options: Mapping[str, Any] | None,
                    staging_dir: str | os.PathLike | None,
                    attestation_signer: AttestationSigner | None = None) -> PackageInfo:
    if staging_dir is not None:
        Path(staging_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="secure-data-package-", dir=staging_dir) as staging:
        if package_id is not None and remote.is_published(remote.join(packages_root, package_id), storage_options):
            # A retry after the upload finished: check the published header and manifest, download no data.
            local = remote.fetch_package(remote.join(packages_root, package_id), staging, storage_options,
                                         only=(remote.HEADER_FILE, remote.MANIFEST_FILE))
            info = _reuse(local, key_service, upstream)
        else:
            info = build_package(staging, sources, key_service, name=name, upstream=upstream,
                                 package_id=package_id, chunk_size=chunk_size,
                                 attestation_signer=attestation_signer)
            remote.publish_package(Path(staging) / info.package_id, packages_root, storage_options)
    return replace(info, uri=remote.join(packages_root, info.package_id))


def _reuse(existing: Path, key_service: KeyService, upstream: Mapping[str, str]) -> PackageInfo:
    """A retry after the package was published: accept it only if it is intact and of the same input."""
    verified = verify_package(existing, key_service)
    if dict(verified.manifest.upstream) != dict(upstream):
        raise PackageError(f"package {existing.name!r} already exists with different upstream digests; "
                           "refusing to overwrite a published package")
    return verified.info()
