"""DSSE-signed in-toto statements with a Transit ECDSA key: packages others can verify.

Two documents are signed here, both as DSSE envelopes (payload type
``application/vnd.in-toto+json``) over an in-toto Statement v1:

* ``model.sig`` inside each package: the OpenSSF ``model_signing`` v1.0 signature of the
  package's files (a Sigstore bundle v0.3 holding the DSSE envelope and a public-key hint),
  so that the standard ``model_signing verify key <package> --signature <package>/model.sig
  --public_key <pem>`` verifies a package without our code;
* the per-run provenance statement (``secure_data.handoff.provenance``).

The signing key is a Transit ``ecdsa-p256`` key (``secure-data-attestation``): the ``model_signing``
``key`` verifier accepts NIST P-256/384/521 keys, the sanitizer may sign with it, the trainer may
only read its public key, and the private key never leaves Transit. Transit signs the SHA-256
(P-384: SHA-384) digest of the DSSE pre-authentication encoding, ``prehashed``, so a package of
100,000 files costs one small request. Encodings only here; the cryptography is Transit's
(signing) and ``cryptography``'s (verification).

``header.json`` is deliberately outside the ``model_signing`` signature, as it is outside our own:
it is the envelope a key rotation rewrites (``lifecycle.rewrap_package``). The statement says so
(``serialization.ignore_paths``), and ``model_signing`` then skips it when verifying.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

PAYLOAD_TYPE = "application/vnd.in-toto+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
MODEL_SIGNING_PREDICATE = "https://model_signing/signature/v1.0"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
SIGNATURE_FILE = "model.sig"
DEFAULT_ATTESTATION_KEY = "secure-data-attestation"
# Transit key type -> (Transit hash_algorithm, hashlib name) used for ECDSA.
_EC_HASH = {"ecdsa-p256": ("sha2-256", "sha256"), "ecdsa-p384": ("sha2-384", "sha384"),
            "ecdsa-p521": ("sha2-512", "sha512")}
_CURVE_HASH = {256: "sha256", 384: "sha384", 521: "sha512"}


class AttestationError(Exception):
    """A statement or envelope that is malformed or whose signature does not verify."""


@dataclass(frozen=True)
class RawSignature:
    """A DER-encoded ECDSA signature and the Transit key version that made it."""

    der: bytes
    key_name: str
    key_version: int

    @property
    def keyid(self) -> str:
        """The DSSE ``keyid`` hint: which Transit key and version to export to verify (not authenticated)."""
        return f"transit:{self.key_name}:v{self.key_version}"


@runtime_checkable
class AttestationSigner(Protocol):
    """Signs DSSE pre-authentication encodings; implemented by ``TransitAttestationSigner``."""

    key_name: str

    def sign(self, message: bytes) -> RawSignature:
        """ECDSA signature over ``message`` (the signer hashes it)."""

    def public_key_pem(self, version: int | None = None) -> bytes:
        """The PEM public key of ``version`` (default: the newest)."""


# --- encodings --------------------------------------------------------------------------------------


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE v1 pre-authentication encoding (github.com/secure-systems-lab/dsse, protocol.md)."""
    kind = payload_type.encode("utf-8")
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_hint(public_key_pem: bytes) -> str:
    """``model_signing``'s public-key identifier: SHA-256 (hex) of the key's SubjectPublicKeyInfo PEM."""
    from cryptography.hazmat.primitives import serialization

    key = serialization.load_pem_public_key(public_key_pem)
    spki = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(spki).hexdigest()


def statement_bytes(statement: Mapping[str, Any]) -> bytes:
    """The payload bytes that get signed (sorted keys, compact; any JSON parser reads it back)."""
    return json.dumps(statement, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                      allow_nan=False).encode("utf-8")


def dsse_envelope(statement: Mapping[str, Any], signer: AttestationSigner) -> dict[str, Any]:
    """A DSSE envelope (JSON form) over ``statement``, signed by ``signer``."""
    payload = statement_bytes(statement)
    signature = signer.sign(pae(PAYLOAD_TYPE, payload))
    return {
        "payloadType": PAYLOAD_TYPE,
        "payload": base64.b64encode(payload).decode("ascii"),
        "signatures": [{"keyid": signature.keyid, "sig": base64.b64encode(signature.der).decode("ascii")}],
    }


def verify_envelope(envelope: Mapping[str, Any], public_key_pem: bytes) -> dict[str, Any]:
    """Check one DSSE envelope against ``public_key_pem`` (an EC key); return its in-toto statement."""
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    try:
        if envelope["payloadType"] != PAYLOAD_TYPE:
            raise AttestationError(f"payload type {envelope['payloadType']!r}, expected {PAYLOAD_TYPE!r}")
        payload = base64.b64decode(envelope["payload"], validate=True)
        sigs = [base64.b64decode(s["sig"], validate=True) for s in envelope["signatures"]]
    except (KeyError, TypeError, ValueError) as exc:
        raise AttestationError(f"not a DSSE envelope: {exc!r}") from None
    key = serialization.load_pem_public_key(public_key_pem)
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise AttestationError("the verification key is not an elliptic-curve key")
    algorithm = getattr(hashes, _CURVE_HASH[key.curve.key_size].upper())()
    message = pae(PAYLOAD_TYPE, payload)
    for sig in sigs:
        try:
            key.verify(sig, message, ec.ECDSA(algorithm))
        except InvalidSignature:
            continue
        statement = json.loads(payload)
        if statement.get("_type") != STATEMENT_TYPE:
            raise AttestationError(f"payload is not an in-toto statement v1: {statement.get('_type')!r}")
        return statement
    raise AttestationError("no signature in the envelope verifies under the given public key")


# --- the model_signing package signature ------------------------------------------------------------


def model_signing_statement(name: str, files: Iterable[tuple[str, str]],
                            ignore_paths: Iterable[str] = ()) -> dict[str, Any]:
    """The ``model_signing`` v1.0 statement of ``(relative posix path, sha256 hex)`` pairs.

    Subject: ``name`` with the SHA-256 over the concatenated raw file digests in listed order
    (what ``model_signing`` recomputes); predicate: serialization ``files``/sha256 and one
    resource per file.
    """
    resources = [{"name": path, "algorithm": "sha256", "digest": digest} for path, digest in sorted(files)]
    root = hashlib.sha256()
    for resource in resources:
        root.update(bytes.fromhex(resource["digest"]))
    serialization: dict[str, Any] = {"method": "files", "hash_type": "sha256", "allow_symlinks": False}
    ignored = sorted(set(ignore_paths))
    if ignored:
        serialization["ignore_paths"] = ignored
    return {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": name, "digest": {"sha256": root.hexdigest()}}],
        "predicateType": MODEL_SIGNING_PREDICATE,
        "predicate": {"serialization": serialization, "resources": resources},
    }


def sigstore_bundle(statement: Mapping[str, Any], signer: AttestationSigner) -> dict[str, Any]:
    """The Sigstore bundle v0.3 that ``model_signing``'s ``key`` verifier reads (no transparency log)."""
    envelope = dsse_envelope(statement, signer)
    version = int(envelope["signatures"][0]["keyid"].rsplit(":v", 1)[1])
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(signer.public_key_pem(version))},
                                 "tlogEntries": []},
        "dsseEnvelope": envelope,
    }


def write_package_signature(root: str | os.PathLike, files: Iterable[tuple[str, str]],
                            signer: AttestationSigner, *, name: str, unsigned: Iterable[str]) -> Path:
    """Write ``<root>/model.sig`` over ``files`` (every file of the package except ``unsigned``)."""
    root = Path(root)
    statement = model_signing_statement(name, files, ignore_paths=[*unsigned, SIGNATURE_FILE])
    target = root / SIGNATURE_FILE
    with open(target, "x", encoding="utf-8") as fh:
        json.dump(sigstore_bundle(statement, signer), fh, sort_keys=True, indent=1)
        fh.write("\n")
    return target


def read_package_statement(root: str | os.PathLike, public_key_pem: bytes) -> dict[str, Any]:
    """The verified statement of ``<root>/model.sig`` (signature only; the files are not re-hashed)."""
    path = Path(root) / SIGNATURE_FILE
    try:
        bundle = json.loads(path.read_text(encoding="utf-8"))
        if bundle["mediaType"] != BUNDLE_MEDIA_TYPE:
            raise AttestationError(f"{SIGNATURE_FILE}: media type {bundle['mediaType']!r}")
        envelope = bundle["dsseEnvelope"]
    except FileNotFoundError:
        raise AttestationError(f"{root}: no {SIGNATURE_FILE}") from None
    except (ValueError, KeyError, TypeError) as exc:
        raise AttestationError(f"{SIGNATURE_FILE} is not a Sigstore bundle: {exc!r}") from None
    return verify_envelope(envelope, public_key_pem)


# --- Transit -------------------------------------------------------------------------------------------


class TransitAttestationSigner:
    """``AttestationSigner`` over Vault/OpenBao Transit (an ``ecdsa-p256``/``p384``/``p521`` key).

    ``ops`` is a ``secure_data.vault.ops.VaultOps`` (its session's identity decides what is
    allowed: the sanitizer signs, the trainer may only read the public key).
    """

    def __init__(self, ops: Any, key_name: str = DEFAULT_ATTESTATION_KEY) -> None:
        self.ops = ops
        self.key_name = key_name
        self._key: dict[str, Any] | None = None

    def __repr__(self) -> str:
        return f"TransitAttestationSigner(key_name={self.key_name!r})"

    def _read_key(self, refresh: bool = False) -> dict[str, Any]:
        if self._key is None or refresh:
            mount = self.ops.transit_mount
            resp = self.ops.session.call(
                lambda c: c.secrets.transit.read_key(self.key_name, mount_point=mount),
                path=f"{mount}/keys/{self.key_name}", op="read")
            data = resp["data"]
            if data.get("type") not in _EC_HASH:
                raise AttestationError(f"Transit key {self.key_name!r} has type {data.get('type')!r}; an ECDSA "
                                       f"key ({', '.join(_EC_HASH)}) is needed for model_signing")
            self._key = data
        return self._key

    def sign(self, message: bytes) -> RawSignature:
        transit_hash, hashlib_name = _EC_HASH[self._read_key()["type"]]
        digest = hashlib.new(hashlib_name, message).digest()
        mount = self.ops.transit_mount
        resp = self.ops.session.call(
            lambda c: c.secrets.transit.sign_data(
                self.key_name, hash_input=base64.b64encode(digest).decode("ascii"), hash_algorithm=transit_hash,
                prehashed=True, marshaling_algorithm="asn1", mount_point=mount),
            path=f"{mount}/sign/{self.key_name}", op="update")
        prefix, version, sig = resp["data"]["signature"].split(":", 2)
        if prefix != "vault" or not version.startswith("v"):
            raise AttestationError("Transit returned an unexpected signature format")
        return RawSignature(der=base64.b64decode(sig), key_name=self.key_name, key_version=int(version[1:]))

    def public_key_pem(self, version: int | None = None) -> bytes:
        keys = self._read_key()["keys"]
        wanted = str(version) if version is not None else str(max(int(v) for v in keys))
        if wanted not in keys:  # rotated since we read the key
            keys = self._read_key(refresh=True)["keys"]
        try:
            return keys[wanted]["public_key"].encode("ascii")
        except KeyError:
            raise AttestationError(f"Transit key {self.key_name!r} has no version {wanted}") from None

    def latest_version(self) -> int:
        return int(self._read_key(refresh=True)["latest_version"])


def transit_signer(key_service: Any, key_name: str | None) -> TransitAttestationSigner | None:
    """The attestation signer over a ``VaultKeyService``'s session; None when ``key_name`` is empty/None."""
    if key_name is None or str(key_name).strip() in ("", "None", "null"):
        return None
    return TransitAttestationSigner(key_service.ops, str(key_name))


def export_public_key(ops: Any, key_name: str = DEFAULT_ATTESTATION_KEY, version: int | None = None) -> bytes:
    """The PEM public key of a Transit attestation key (any identity with ``read`` on ``keys/<name>``)."""
    return TransitAttestationSigner(ops, key_name).public_key_pem(version)


def main(argv: list[str] | None = None) -> int:
    """``python -m secure_data.handoff.attest public-key --url URL --creds creds.json --out attestation.pub.pem``."""
    import argparse
    import sys

    parser = argparse.ArgumentParser(prog="python -m secure_data.handoff.attest")
    sub = parser.add_subparsers(dest="command", required=True)
    pk = sub.add_parser("public-key", help="export the attestation key's PEM public key (for model_signing)")
    pk.add_argument("--url", required=True)
    pk.add_argument("--creds", required=True, help="setup's --out file (role_id/secret_id per role)")
    pk.add_argument("--role", default="trainer")
    pk.add_argument("--key", default=DEFAULT_ATTESTATION_KEY)
    pk.add_argument("--version", type=int, default=None)
    pk.add_argument("--transit-mount", default="transit")
    pk.add_argument("--out", help="write the PEM here (default: stdout, which may also carry log lines)")
    args = parser.parse_args(argv)
    from secure_data.vault.keyservice import VaultKeyService
    from secure_data.vault.setup import read_result

    creds = read_result(args.creds).role(args.role)
    ks = VaultKeyService.for_approle(args.url, creds.role_id, creds.secret_id, transit_mount=args.transit_mount)
    pem = export_public_key(ks.ops, args.key, args.version)
    if args.out:
        Path(args.out).write_bytes(pem)
    else:
        sys.stdout.write(pem.decode("ascii"))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
