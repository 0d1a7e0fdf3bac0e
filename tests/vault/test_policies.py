"""Least privilege against a real OpenBao: each identity can do its job and gets a clear error beyond it."""

from __future__ import annotations

import pytest

from secure_data.handoff.keyservice import DataKey, KeyService
from secure_data.vault.errors import VaultPermissionError
from secure_data.vault.keyservice import VaultKeyService
from secure_data.vault.ops import VaultOps
from secure_data.vault.session import VaultSession


def _ks(openbao, creds) -> VaultKeyService:
    return VaultKeyService.for_approle(openbao.url, creds.role_id, creds.secret_id)


def test_sanitizer_creates_data_keys_and_signs_but_cannot_unwrap(openbao, vault):
    ks = _ks(openbao, vault.sanitizer)
    assert isinstance(ks, KeyService)

    key = ks.generate_data_key()
    assert isinstance(key, DataKey)
    assert len(key.plaintext) == 32 and key.wrapped.startswith("vault:v")
    assert key.key_name == vault.data_key and key.key_version >= 1
    assert key.plaintext.hex() not in repr(key)

    sig = ks.sign(b"manifest digest")
    assert sig.startswith("vault:v")
    assert ks.verify(b"manifest digest", sig)

    with pytest.raises(VaultPermissionError) as err:
        ks.unwrap(key.wrapped)
    msg = str(err.value)
    assert f"{vault.transit_mount}/decrypt/{vault.data_key}" in msg
    assert "secure-data-sanitizer" in msg and openbao.url in msg
    assert err.value.path == f"{vault.transit_mount}/decrypt/{vault.data_key}"


def test_trainer_unwraps_and_verifies_but_cannot_sign_or_make_keys(openbao, vault):
    sanitizer = _ks(openbao, vault.sanitizer)
    trainer = _ks(openbao, vault.trainer)
    key = sanitizer.generate_data_key()
    sig = sanitizer.sign(b"package manifest")

    assert trainer.unwrap(key.wrapped) == key.plaintext
    assert trainer.verify(b"package manifest", sig)
    assert not trainer.verify(b"package manifesT", sig)  # tampered message
    assert not trainer.verify(b"package manifest", "vault:v1:not-a-signature")

    with pytest.raises(VaultPermissionError) as err:
        trainer.sign(b"forged manifest")
    assert f"{vault.transit_mount}/sign/{vault.signing_key}" in str(err.value)
    assert "secure-data-trainer" in str(err.value)

    with pytest.raises(VaultPermissionError, match="datakey/plaintext"):
        trainer.generate_data_key()


def test_secret_paths_are_split_by_role(openbao, vault):
    sanitizer = VaultOps(VaultSession.for_approle(openbao.url, vault.sanitizer.role_id, vault.sanitizer.secret_id))
    trainer = VaultOps(VaultSession.for_approle(openbao.url, vault.trainer.role_id, vault.trainer.secret_id))
    raw = f"{vault.dataset_prefix}/raw"
    package = f"{vault.training_prefix}/package"

    assert set(sanitizer.read_kv(raw)) == {"access_key_id", "secret_access_key"}
    assert set(trainer.read_kv(package)) == {"access_key_id", "secret_access_key"}
    with pytest.raises(VaultPermissionError, match=f"secret/data/{package}"):
        sanitizer.read_kv(package)
    with pytest.raises(VaultPermissionError, match=f"secret/data/{raw}"):
        trainer.read_kv(raw)
    for ops in (sanitizer, trainer):
        ops.session.close()


def test_keyadmin_rotates_and_rewraps_without_seeing_plaintext(openbao, vault):
    sanitizer = _ks(openbao, vault.sanitizer)
    trainer = _ks(openbao, vault.trainer)
    admin = VaultOps(VaultSession.for_approle(openbao.url, vault.keyadmin.role_id, vault.keyadmin.secret_id))

    key = sanitizer.generate_data_key()
    before = admin.key_info(vault.data_key).latest_version
    assert admin.rotate(vault.data_key) == before + 1
    rewrapped = admin.rewrap(vault.data_key, key.wrapped)
    assert rewrapped.startswith(f"vault:v{before + 1}:") and rewrapped != key.wrapped
    # The sanitizer may rewrap too (no plaintext involved), the trainer still unwraps both forms.
    assert sanitizer.rewrap(key.wrapped).startswith(f"vault:v{before + 1}:")
    assert trainer.unwrap(rewrapped) == key.plaintext == trainer.unwrap(key.wrapped)

    with pytest.raises(VaultPermissionError, match="decrypt"):
        admin.decrypt(vault.data_key, rewrapped)
    with pytest.raises(VaultPermissionError, match="sign"):
        admin.sign(vault.signing_key, b"x")
    admin.session.close()


def test_explicit_deny_survives_a_broader_policy(openbao, vault, root_client):
    """Attaching the trainer policy to a sanitizer identity does not give it decrypt (deny wins)."""
    from secure_data.vault.setup import ensure_approle, policy_name

    creds = ensure_approle(root_client, "sanitizer-plus-trainer", [policy_name("sanitizer"), policy_name("trainer")])
    ks = _ks(openbao, creds)
    with pytest.raises(VaultPermissionError):
        ks.unwrap(_ks(openbao, vault.sanitizer).generate_data_key().wrapped)
    with pytest.raises(VaultPermissionError):
        ks.sign(b"x")  # and the trainer policy's deny on sign wins as well
