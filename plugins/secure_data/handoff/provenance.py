"""One signed provenance statement per run: ``<run>/provenance.intoto.jsonl``.

An in-toto Statement v1 with a SLSA Provenance v1 predicate, in a DSSE envelope signed by the
Transit attestation key (``secure_data.handoff.attest``), one envelope per line (the ``.intoto.jsonl``
convention). It records, for auditors and for tools that speak in-toto/SLSA:

* subject: the package (id, URI, manifest digest) and its ``model.sig``;
* ``buildDefinition.externalParameters``: the source URI, DAG and run ids;
* ``buildDefinition.internalParameters``: the effective policy (the deployment policy's digests when the
  package carries them, and each stage's effective parameters' digest) and the key names and versions
  that wrapped and signed;
* ``buildDefinition.resolvedDependencies``: the source (digest = its integrity manifest, which lists
  every source file's SHA-256) and every model file by its pinned SHA-256;
* ``runDetails.byproducts``: each stage manifest (path in the run folder, digest, counts and
  quarantine reasons by code), the anonymization audit log and the poisoning findings.

Only paths, digests, counts, codes, key names and versions: never a secret or a data key.
``verify_provenance`` checks the signature; ``check_run_digests`` re-hashes every byproduct the
statement names in the run folder.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from secure_data.dataset.manifest import canonical_json, digest_of, read_manifest
from secure_data.dataset.stage import AnonymizeFigures, PoisoningFigures, StageResult
from secure_data.handoff.attest import STATEMENT_TYPE, AttestationSigner, dsse_envelope, verify_envelope
from secure_data.handoff.package import PackageInfo

PROVENANCE_FILE = "provenance.intoto.jsonl"
SLSA_PROVENANCE = "https://slsa.dev/provenance/v1"
BUILD_TYPE = "https://secure-data.dev/sanitization/v1"
BUILDER_ID = "https://secure-data.dev/airflow-plugin"
_POLICY_KEYS = ("policy", "policy.effective")  # digests the hand-off signs into the package (upstream)


class ProvenanceError(Exception):
    """The statement does not verify or does not match the run's files."""


def _hex(digest: str) -> str:
    return digest.removeprefix("sha256:")


def _run_relative(path: str | os.PathLike, run_root: Path) -> str:
    try:
        return Path(path).resolve().relative_to(run_root.resolve()).as_posix()
    except ValueError:
        return Path(path).as_posix()


def _side_files(stage: StageResult) -> list[tuple[str | None, str | None, str]]:
    """(digest, path, name) of the digest-carrying files a stage wrote beside its manifest."""
    f = stage.figures
    if isinstance(f, AnonymizeFigures):
        return [(f.audit_digest, f.audit_path, "audit.jsonl")]
    if isinstance(f, PoisoningFigures):
        return [(f.findings_digest, f.findings_path, "findings.jsonl")]
    return []


def _stage_byproducts(stage: StageResult, run_root: Path) -> tuple[list[dict[str, Any]], Mapping[str, Any]]:
    """The stage manifest (read back and checked against its digest) and its digest-carrying side files."""
    item: dict[str, Any] = {"name": f"{stage.stage}/manifest.jsonl", "uri": _run_relative(stage.manifest_path, run_root),
                            "digest": {"sha256": _hex(stage.manifest_digest)}}
    try:  # a manifest that differs from its announced digest raises (IntegrityError): never sign over it
        manifest = read_manifest(stage.manifest_path, expected_digest=stage.manifest_digest)
    except FileNotFoundError:
        item["annotations"] = {"stage": stage.stage, "counts": dict(stage.counts), "manifest": "not found"}
        return [item], {}
    reasons = Counter(r.code for rec in manifest.records if not rec.accepted for r in rec.reasons)
    item["annotations"] = {"stage": stage.stage, "counts": dict(manifest.counts()),
                           "quarantine_reasons": dict(sorted(reasons.items()))}
    out = [item]
    for digest, path, name in _side_files(stage):
        if isinstance(digest, str) and isinstance(path, str):
            out.append({"name": f"{stage.stage}/{name}", "uri": _run_relative(path, run_root),
                        "digest": {"sha256": _hex(digest)}})
    return out, manifest.header


def _stage_params_digest(header: Mapping[str, Any]) -> str | None:
    if "config" in header:
        return digest_of(canonical_json(header["config"]).encode("utf-8"))
    params = header.get("params_sha256")  # anonymize: the digest(s) of the engine parameters
    if params:
        return ",".join(f"sha256:{p}" for p in params) if isinstance(params, list) else str(params)
    return None


def build_statement(
    *,
    package: PackageInfo,
    stages: Sequence[StageResult],
    run_root: str | os.PathLike,
    dag_id: str,
    run_id: str,
    source: str | None = None,
    started_on: str | None = None,
    keys: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The in-toto statement of one run (unsigned). ``stages``: integrity, poisoning, anonymize results."""
    run_root = Path(run_root)
    byproducts: list[dict[str, Any]] = []
    stage_params: dict[str, str] = {}
    models: dict[str, str] = {}
    for stage in stages:
        items, header = _stage_byproducts(stage, run_root)
        byproducts += items
        params = _stage_params_digest(header)
        if params:
            stage_params[stage.stage] = params
        models.update({str(k): str(v) for k, v in (header.get("models") or {}).items()})
        if source is None and stage.stage == "integrity":
            source = str(header.get("source") or stage.data_root)
    integrity = next((s for s in stages if s.stage == "integrity"), None)
    dependencies: list[dict[str, Any]] = []
    if integrity is not None:
        dependencies.append({
            "name": "source", "uri": source,
            "digest": {"sha256": _hex(integrity.manifest_digest)},
            "annotations": {"digest_of": "the integrity manifest: every source file's path, sha256 and size",
                            "files": integrity.counts.get("files")},
        })
    dependencies += [{"name": f"model:{name}", "digest": {"sha256": sha}} for name, sha in sorted(models.items())]
    policy = {k: v for k, v in package.upstream.items() if k in _POLICY_KEYS}
    signatures = {"data_key": {"name": package.key_name, "version": package.key_version},
                  **{k: dict(v) for k, v in package.signatures.items()}, **dict(keys or {})}
    subject = [{"name": package.package_id, "uri": package.uri, "digest": {"sha256": _hex(package.manifest_digest)},
                "annotations": {"digest_of": "manifest.jsonl (the signed package manifest)",
                                "counts": dict(package.counts)}}]
    model_sig = package.signatures.get("model_signing") or {}
    if model_sig.get("digest"):
        subject.append({"name": f"{package.package_id}/model.sig", "digest": {"sha256": _hex(model_sig["digest"])}})
    return {
        "_type": STATEMENT_TYPE,
        "subject": subject,
        "predicateType": SLSA_PROVENANCE,
        "predicate": {
            "buildDefinition": {
                "buildType": BUILD_TYPE,
                "externalParameters": {"source": source, "dag_id": dag_id, "run_id": run_id},
                "internalParameters": {"policy": policy, "stage_params": stage_params, "keys": signatures,
                                       "upstream": dict(package.upstream)},
                "resolvedDependencies": dependencies,
            },
            "runDetails": {
                "builder": {"id": BUILDER_ID},
                "metadata": {"invocationId": f"{dag_id}/{run_id}",
                             **({"startedOn": started_on} if started_on else {}),
                             "finishedOn": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())},
                "byproducts": byproducts,
            },
        },
    }


def write_provenance(run_root: str | os.PathLike, statement: Mapping[str, Any],
                     signer: AttestationSigner) -> dict[str, str]:
    """Sign ``statement`` and write ``<run_root>/provenance.intoto.jsonl`` atomically.

    Returns the non-secret pointer the Asset event carries: ``provenance_uri`` and ``provenance_digest``.
    """
    from secure_data.dataset.atomic import atomic_write_bytes

    line = (json.dumps(dsse_envelope(statement, signer), sort_keys=True, separators=(",", ":")) + "\n").encode()
    path = atomic_write_bytes(Path(run_root) / PROVENANCE_FILE, line)
    return {"provenance_uri": path.resolve().as_uri(), "provenance_digest": digest_of(line)}


def provenance_for_run(run_root: str | os.PathLike, *, package: PackageInfo, stages: Sequence[StageResult],
                       signer: AttestationSigner | None, dag_id: str, run_id: str,
                       started_on: str | None = None) -> dict[str, str]:
    """Build, sign and write the run's statement; ``{}`` when there is no attestation signer."""
    if signer is None:
        return {}
    statement = build_statement(package=package, stages=[s for s in stages if s.stage != "handoff"],
                                run_root=run_root, dag_id=dag_id, run_id=run_id, started_on=started_on)
    return write_provenance(run_root, statement, signer)


def verify_provenance(path: str | os.PathLike, public_key_pem: bytes,
                      expected_digest: str | None = None) -> list[dict[str, Any]]:
    """Every statement of a ``.intoto.jsonl`` file, each signature checked; optionally the file's digest."""
    raw = Path(path).read_bytes()
    if expected_digest is not None and digest_of(raw) != expected_digest:
        raise ProvenanceError(f"{path}: digest {digest_of(raw)} is not the announced {expected_digest}")
    statements = []
    for number, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        try:
            statements.append(verify_envelope(json.loads(line), public_key_pem))
        except Exception as exc:  # AttestationError, JSON errors: say which line
            raise ProvenanceError(f"{path}:{number}: {exc}") from None
    if not statements:
        raise ProvenanceError(f"{path}: no statement")
    return statements


def check_run_digests(statement: Mapping[str, Any], run_root: str | os.PathLike) -> list[str]:
    """Re-hash every byproduct of ``statement`` found under ``run_root``; return the names checked.

    Raises ``ProvenanceError`` naming the first file that is missing or differs.
    """
    run_root = Path(run_root)
    checked = []
    for item in statement["predicate"]["runDetails"]["byproducts"]:
        path = Path(item["uri"])
        path = path if path.is_absolute() else run_root / path
        try:
            actual = hashlib.sha256(path.read_bytes()).hexdigest()
        except FileNotFoundError:
            raise ProvenanceError(f"{item['name']}: {path} is missing") from None
        if actual != item["digest"]["sha256"]:
            raise ProvenanceError(f"{item['name']}: sha256 {actual} differs from the signed "
                                  f"{item['digest']['sha256']}")
        checked.append(item["name"])
    return checked


def payload_of(line: bytes | str) -> dict[str, Any]:
    """The statement inside one envelope line, WITHOUT checking the signature (for display only)."""
    envelope = json.loads(line)
    return json.loads(base64.b64decode(envelope["payload"]))


def main(argv: list[str] | None = None) -> int:
    """``python -m secure_data.handoff.provenance verify FILE --public-key PEM [--run-dir DIR]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m secure_data.handoff.provenance")
    sub = parser.add_subparsers(dest="command", required=True)
    verify = sub.add_parser("verify", help="check the signature (and, with --run-dir, every digest)")
    verify.add_argument("file")
    verify.add_argument("--public-key", required=True, help="PEM public key of the attestation key")
    verify.add_argument("--run-dir", help="the run folder: re-hash every manifest the statement names")
    verify.add_argument("--digest", help="the provenance_digest announced in the Asset event")
    args = parser.parse_args(argv)
    try:
        statements = verify_provenance(args.file, Path(args.public_key).read_bytes(), args.digest)
        checked = [name for s in statements for name in check_run_digests(s, args.run_dir)] if args.run_dir else []
    except ProvenanceError as exc:
        print(f"Verification failed: {exc}")
        return 1
    subjects = [s["name"] for st in statements for s in st["subject"]]
    print(f"Verification succeeded: {len(statements)} statement(s), subjects {subjects}"
          + (f", {len(checked)} run file(s) re-hashed" if checked else ""))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
