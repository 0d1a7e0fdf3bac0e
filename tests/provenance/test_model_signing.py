"""Packages verifiable by the OpenSSF ``model_signing`` CLI with the Transit key's exported public key.

The package is built by the real sanitizer identity against the real OpenBao; the verifier is the
unmodified ``model_signing verify key`` command (PyPI ``model-signing``, pinned), run as a subprocess.
It must accept the package as built and refuse it after one flipped byte, an added file, a removed file.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

MODEL_SIGNING = Path(sys.executable).with_name("model_signing")


def _verify(package: Path, public_key: Path, signature: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(MODEL_SIGNING), "verify", "key", str(package), "--signature", str(signature or package / "model.sig"),
         "--public_key", str(public_key)], capture_output=True, text=True, timeout=120, check=False)


@pytest.fixture
def signed_package(tmp_path, small_dataset, sanitizer_ks, attestation_signer):
    from secure_data.handoff.package import build_package, package_path, sources_from_directory

    info = build_package(tmp_path / "packages", sources_from_directory(small_dataset), sanitizer_ks, name="small",
                         upstream={"anonymize": "sha256:" + "0" * 64}, attestation_signer=attestation_signer)
    return info, package_path(info.uri)


def test_model_signing_cli_verifies_a_real_package(signed_package, public_key_pem):
    info, root = signed_package
    result = _verify(root, public_key_pem)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "Verification succeeded" in result.stdout
    facts = info.signatures["model_signing"]
    assert facts["key_name"] == "secure-data-attestation" and facts["key_version"] >= 1
    assert facts["digest"].startswith("sha256:")


def test_the_signature_covers_every_package_file_but_the_rewrappable_header(signed_package, public_key_pem):
    from secure_data.handoff.attest import read_package_statement

    _, root = signed_package
    statement = read_package_statement(root, public_key_pem.read_bytes())
    signed = {r["name"] for r in statement["predicate"]["resources"]}
    on_disk = {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
    assert signed == on_disk - {"header.json", "model.sig"}
    assert statement["predicate"]["serialization"]["ignore_paths"] == ["header.json", "model.sig"]
    assert statement["subject"][0]["name"] == root.name


@pytest.mark.parametrize("tamper", ["flip_byte", "add_file", "remove_file", "edit_manifest"])
def test_model_signing_cli_refuses_a_tampered_package(signed_package, public_key_pem, tmp_path, tamper):
    _, root = signed_package
    copy = tmp_path / "copy" / root.name
    shutil.copytree(root, copy)
    assert _verify(copy, public_key_pem).returncode == 0  # control: the untouched copy verifies
    victim = sorted((copy / "data").rglob("*.enc"))[3]
    if tamper == "flip_byte":
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
    elif tamper == "add_file":
        (copy / "data" / "images" / "train" / "extra.jpg.enc").write_bytes(b"\0" * 64)
    elif tamper == "remove_file":
        victim.unlink()
    else:
        manifest = copy / "manifest.jsonl"
        manifest.write_bytes(manifest.read_bytes().replace(b'"kind":"image"', b'"kind":"label"', 1))
    result = _verify(copy, public_key_pem)
    assert result.returncode != 0
    assert "Verification failed" in result.stderr, result.stdout + result.stderr


def test_another_key_or_a_forged_signature_is_refused(signed_package, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    _, root = signed_package
    other = ec.generate_private_key(ec.SECP256R1()).public_key()
    pem = tmp_path / "other.pem"
    pem.write_bytes(other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
    assert _verify(root, pem).returncode != 0


def test_only_the_sanitizer_can_sign_with_the_attestation_key(trainer_ks, attestation_signer):
    from secure_data.handoff.attest import TransitAttestationSigner
    from secure_data.vault.errors import VaultPermissionError

    assert attestation_signer.sign(b"probe").key_version >= 1  # the sanitizer may
    with pytest.raises(VaultPermissionError):
        TransitAttestationSigner(trainer_ks.ops).sign(b"probe")  # the trainer may only read the public key


def test_our_own_verifier_still_accepts_a_package_with_model_sig(signed_package, trainer_ks):
    from secure_data.handoff.consumer import open_package

    info, root = signed_package
    with open_package(info.uri, trainer_ks, expected_package_id=info.package_id) as pkg:
        assert pkg.package_id == info.package_id


def test_public_key_export_cli_writes_the_key_model_signing_accepts(signed_package, openbao, vault, public_key_pem,
                                                                     tmp_path):
    """The documented export command (trainer identity, from setup's credentials file) gives the same key."""
    from secure_data.vault.setup import write_result

    _, root = signed_package
    creds = write_result(vault, tmp_path / "creds.json")
    out = tmp_path / "exported.pem"
    result = subprocess.run([sys.executable, "-m", "secure_data.handoff.attest", "public-key", "--url", openbao.url,
                             "--creds", str(creds), "--role", "trainer", "--out", str(out)],
                            capture_output=True, text=True, timeout=120, check=False,
                            env={"PYTHONPATH": str(Path(__file__).resolve().parents[2] / "plugins"), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert out.read_bytes() == public_key_pem.read_bytes()
    assert _verify(root, out).returncode == 0
